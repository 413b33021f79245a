"""Rollouts for GRPO: the project's constrained sampler draws them, the scoring code rewards them.

`RolloutScorer.rollouts(model, smiles, step)` samples every requested rollout with the public
sampling entry points (`plan_jobs` -> `run_batches` -> `assemble`: batched KV-cache decoding,
structure-constrained, canonical tokens, each rollout from its own generator seeded by (seed,
step, molecule, index)), then scores each molecule's rollouts together against its training-split
references: RMSD matrix (`RmsdPool`, GetBestRMS on heavy atoms), the group terms of `reward.py`,
stereo (`stereo_matches`), PoseBusters' cheap checks and MMFF94 energy when their weights are set.
The loss sees only the tokens the model chose: the coordinate digits (`chosen_mask`); the
structure tokens the grammar forces carry no choice to reinforce.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem
from rdkit.rdBase import BlockLogs

from molgen3D.chem.tagged_text import SMILES_CLOSE, SMILES_OPEN, format_prompt
from molgen3D.scoring.checks import single_conformer, stereo_matches
from molgen3D.scoring.references import ReferenceMolecule
from molgen3D.scoring.rmsd import RmsdPool
from molgen3D.generation.decode_loops import run_with_cache
from molgen3D.generation.sampling import SamplingConfig, assemble, plan_jobs, run_batches
from molgen3D.training.posttraining.config import RewardSettings
from molgen3D.training.posttraining.reward import group_terms

_NUMBER_CHARS = frozenset("0123456789.-")


def smiles_of_prompt(prompt: str) -> str:
    """The canonical SMILES inside `[SMILES]...[/SMILES]`."""
    if not (prompt.startswith(SMILES_OPEN) and prompt.endswith(SMILES_CLOSE)):
        raise ValueError(f"not a conformer prompt: {prompt[:80]!r}")
    return prompt[len(SMILES_OPEN) : -len(SMILES_CLOSE)]


def step_seed(seed: int, step: int) -> int:
    """The sampler's seed at optimizer step `step`: rollouts differ between steps and repeat on a resumed run."""
    digest = hashlib.sha256(f"posttrain\0{seed}\0{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def chosen_mask(token_strings: Sequence[str]) -> list[int]:
    """1 for tokens that write a coordinate number (inside `<...>`), 0 for structure the grammar forces."""
    mask, inside = [], False
    for text in token_strings:
        mask.append(int((inside or "<" in text) and any(ch in _NUMBER_CHARS for ch in text)))
        for ch in text:
            if ch == "<":
                inside = True
            elif ch == ">":
                inside = False
    return mask


@dataclass
class Rollouts:
    """One step's rollouts (in the order asked) and what scoring found."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    mask: list[list[int]]
    terms: dict[str, list[float]]
    """Unweighted reward terms per rollout (`floor` is the floor for invalid rollouts, 0 for valid ones)."""
    stats: dict[str, float] = field(default_factory=dict)


def _posebusters_passes(mols: Sequence[Chem.Mol], checks: Sequence[str]) -> np.ndarray:
    """Per molecule: the share of `checks` PoseBusters' `mol_fast` configuration passes (a check not run fails)."""
    from posebusters import PoseBusters

    if not mols:
        return np.zeros(0)
    logging.getLogger("posebusters").setLevel(logging.ERROR)
    prepared = [single_conformer(m, m.GetConformer().GetId()) for m in mols]
    with BlockLogs():
        table = PoseBusters(config="mol_fast").bust(prepared, None, None)
    unknown = [c for c in checks if c not in table.columns]
    if unknown:
        raise ValueError(
            f"[posttrain.reward] posebusters_checks: {unknown} are not PoseBusters mol_fast checks "
            f"({', '.join(table.columns)})"
        )
    passed = np.array([[v is True or v is np.True_ for v in table[c].to_numpy(dtype=object)] for c in checks])
    return passed.mean(axis=0) if len(checks) else np.ones(len(mols))


def mmff_energy(mol: Chem.Mol) -> float:
    """MMFF94 energy (kcal/mol) of the conformer with hydrogens placed by RDKit; NaN if MMFF cannot type it."""
    with BlockLogs():
        withh = Chem.AddHs(mol, addCoords=True)
        props = AllChem.MMFFGetMoleculeProperties(withh)
        if props is None:
            return math.nan
        field_ = AllChem.MMFFGetMoleculeForceField(withh, props)
        return math.nan if field_ is None else float(field_.CalcEnergy())


class RolloutScorer:
    """Draws and scores the rollouts of each step; holds the references and the RMSD pool."""

    def __init__(
        self,
        tokenizer,
        references: Sequence[ReferenceMolecule],
        sampling: SamplingConfig,
        reward: RewardSettings,
        pool: RmsdPool,
    ):
        self.tokenizer, self.sampling, self.reward, self.pool = tokenizer, sampling, reward, pool
        self.references = {r.smiles: r for r in references}
        self._strings: dict[int, str] = {}
        self.last_stats: dict[str, float] = {}
        self._cumulative = {"rollout_seconds": 0.0}
        self._first_start: float | None = None

    def _token_strings(self, ids: Sequence[int]) -> list[str]:
        missing = sorted({i for i in ids if i not in self._strings})
        if missing:
            decoded = self.tokenizer.batch_decode(
                [[i] for i in missing], skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            self._strings.update(zip(missing, decoded))
        return [self._strings[i] for i in ids]

    def rollouts(self, model, smiles: Sequence[str], step: int, max_context: int | None = None) -> Rollouts:
        """Sample and score one rollout per entry of `smiles` (a molecule's entries form its group)."""
        start = time.perf_counter()
        if self._first_start is None:
            self._first_start = start
        unknown = sorted({s for s in smiles if s not in self.references})
        if unknown:
            raise KeyError(f"no training-split references for {unknown[:3]}")
        molecules = list(dict.fromkeys(smiles))
        counts = Counter(smiles)
        cfg = replace(self.sampling, seed=step_seed(self.sampling.seed, step))
        batches, failed = plan_jobs(
            self.tokenizer, molecules, [counts[s] for s in molecules], cfg, max_context=max_context
        )
        was_training = model.training
        model.eval()
        try:
            results = run_batches(
                partial(run_with_cache, model), self.tokenizer, molecules, batches, cfg, device=model.device
            )
        finally:
            model.train(was_training)
        outcomes = assemble(self.tokenizer, molecules, batches, results, failed, cfg.positions)
        ids: dict[tuple[int, int], list[int]] = {}
        for batch, batch_results in zip(batches, results):
            for job, res in zip(batch, batch_results):
                ids[(job.mol, job.index)] = list(res.token_ids)
        sampled = time.perf_counter()
        per_molecule = self._score(molecules, outcomes)
        prompts = {s: self.tokenizer.encode(format_prompt(s), add_special_tokens=False) for s in molecules}
        eos = self.tokenizer.eos_token_id
        seen: Counter = Counter()
        out = Rollouts([], [], [], {name: [] for name in per_molecule[molecules[0]]})
        for s in smiles:
            m, k = molecules.index(s), seen[s]
            seen[s] += 1
            # A rollout that failed before decoding is one masked token; one that ended gets the separator the
            # pretraining text puts after [/CONFORMER] (structure, masked), so TRL sees it terminated.
            completion = ids.get((m, k)) or []
            mask = chosen_mask(self._token_strings(completion))
            if not completion or completion[-1] != eos:
                completion, mask = completion + [eos], mask + [0]
            out.prompt_ids.append(list(prompts[s]))
            out.completion_ids.append(completion)
            out.mask.append(mask)
            for name, values in per_molecule[s].items():
                out.terms[name].append(float(values[k]))
        done = time.perf_counter()
        self._cumulative["rollout_seconds"] += done - start
        valid = [o.mol is not None for samples in outcomes for o in samples]
        stereo = [o.extra["stereo_ok"] for samples in outcomes for o in samples if o.extra and "stereo_ok" in o.extra]
        out.stats = {
            "validity": float(np.mean(valid)) if valid else math.nan,
            "stereo_ok": float(np.mean(stereo)) if stereo else math.nan,
            "sampling_seconds": sampled - start,
            "scoring_seconds": done - sampled,
            "rollout_time_share": self._cumulative["rollout_seconds"] / max(done - self._first_start, 1e-9)
            if step
            else 1.0,
            "coordinate_tokens_per_rollout": float(np.mean([sum(m) for m in out.mask])),
        }
        self.last_stats = out.stats
        return out

    def _score(self, molecules: Sequence[str], outcomes) -> dict[str, dict[str, np.ndarray]]:
        r = self.reward
        tasks = [(self.references[s].conformers, [o.mol for o in samples]) for s, samples in zip(molecules, outcomes)]
        matrices, _ = self.pool.matrices(tasks)
        flat = [o.mol for samples in outcomes for o in samples if o.mol is not None]
        pb = (
            iter(_posebusters_passes(flat, r.posebusters_checks))
            if (r.posebusters_weight or r.posebusters_gate)
            else None
        )
        scored: dict[str, dict[str, np.ndarray]] = {}
        for s, samples, rmsd in zip(molecules, outcomes, matrices):
            valid = np.array([o.mol is not None for o in samples])
            extra = {}
            if r.stereo_weight:
                extra["stereo"] = np.zeros(len(samples))
            if pb is not None:
                extra["posebusters"] = np.zeros(len(samples))
            if r.mmff_weight:
                extra["mmff"] = np.zeros(len(samples))
            for k, o in enumerate(samples):
                if o.mol is None:
                    continue
                ok = stereo_matches(o.mol, s)
                if ok is not None:
                    o.extra = {**(o.extra or {}), "stereo_ok": ok}
                if "stereo" in extra:
                    extra["stereo"][k] = float(ok is not False)  # a prompt without stereo has none to miss
                if pb is not None:
                    extra["posebusters"][k] = next(pb)
                    if r.posebusters_gate and extra["posebusters"][k] < 1.0:
                        valid[k] = False
                if "mmff" in extra:
                    energy = mmff_energy(o.mol)
                    scale = o.mol.GetNumAtoms() * r.mmff_scale
                    extra["mmff"][k] = -math.tanh(energy / scale) if math.isfinite(energy) else -1.0
            g = group_terms(
                rmsd,
                valid,
                floor=r.floor,
                sigma=r.sigma,
                delta=r.delta,
                rho=r.rho,
                credit=r.coverage_credit,
                depth_weight=r.depth_weight,
            )
            terms = {"floor": g.floor, "quality": g.quality, "coverage": g.coverage}
            if r.precision_weight:
                terms["precision"] = g.precision
            if r.matching_weight:
                terms["matching"] = g.matching
            for name, values in extra.items():
                terms[name] = np.where(g.valid, values, 0.0)
            scored[s] = terms
        return scored


def term_weights(reward: RewardSettings) -> dict[str, float]:
    """The weight of each reward term `RolloutScorer` reports (the floor enters with weight 1)."""
    weights = {"floor": 1.0, "quality": reward.quality_weight, "coverage": reward.coverage_weight}
    if reward.precision_weight:
        weights["precision"] = reward.precision_weight
    if reward.matching_weight:
        weights["matching"] = reward.matching_weight
    if reward.stereo_weight:
        weights["stereo"] = reward.stereo_weight
    if reward.posebusters_weight or reward.posebusters_gate:
        weights["posebusters"] = reward.posebusters_weight
    if reward.mmff_weight:
        weights["mmff"] = reward.mmff_weight
    return weights
