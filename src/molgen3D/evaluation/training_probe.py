"""A numerical check during training: sample a few validation molecules and measure RMSD.

The validator calls `sample_and_score` every N steps, with a transformers copy of the model
(KV cache, `hf_model=`) or a plain forward of the TorchTitan model (`logits_fn`). It uses the
same constrained decoding as `molgen3d generate`, so every sample has the prompt's graph unless
it runs out of tokens, and reports:
- conformer_validity: valid samples / samples;
- conformer_mean_best_rmsd: over valid samples, the mean of each sample's best heavy-atom RMSD
  to any reference conformer of its molecule (the MAT-P of the GEOM protocol), NaN if none;
- conformer_samples: samples drawn.
RMSD runs in-process with a small symmetry-mapping cap: a probe must never stall training.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from rdkit import Chem

from molgen3D.scoring.references import load_jsonl_references, seeded_choice
from molgen3D.scoring.rmsd import best_rms
from molgen3D.generation.decode_loops import run_with_cache, run_without_cache
from molgen3D.generation.sampling import DEFAULT_PRECISION, SamplingConfig, sample_molecules

PRECISION_PROP = "molgen3d_precision"
"""Mol property carrying the data's coordinate decimals from `load_references` to `sample_and_score`."""
POSITIONS_PROP = "molgen3d_positions"
"""Mol property carrying the data's positions ('absolute'/'relative'/'local') the same way."""


@functools.lru_cache(maxsize=4)
def _tokenizer_from_dir(path: str):
    from molgen3D.tokenization.load import load_tokenizer

    return load_tokenizer(path)


def as_hf_tokenizer(tokenizer):
    """A transformers tokenizer from one, from TorchTitan's `HuggingFaceTokenizer`, or from a directory/alias.

    The loaded tokenizer is cached per directory, so its constrained-decoding table is built once per run.
    """
    if hasattr(tokenizer, "get_added_vocab") and hasattr(tokenizer, "batch_decode"):
        return tokenizer
    path = getattr(tokenizer, "tokenizer_path", tokenizer)
    if isinstance(path, (str, Path)):
        return _tokenizer_from_dir(str(path))
    raise TypeError(
        f"sample_and_score needs a transformers tokenizer, TorchTitan's HuggingFaceTokenizer or a tokenizer "
        f"directory, got {type(tokenizer).__name__}"
    )


def load_references(path: str | Path, num_molecules: int, seed: int) -> list[tuple[str, list[Chem.Mol]]]:
    """`num_molecules` molecules drawn reproducibly from a JSONL split: (canonical SMILES, conformers)."""
    from molgen3D.chem.coordinate_format import dataset_format
    from molgen3D.config.paths import resolve_path

    molecules, precision = load_jsonl_references(path, select=seeded_choice(num_molecules, seed))
    fmt = dataset_format(resolve_path(str(path)))
    for mol in molecules:
        for conf in mol.conformers:
            if precision is not None:
                conf.SetIntProp(PRECISION_PROP, precision)
            if fmt is not None:
                conf.SetProp(POSITIONS_PROP, fmt.positions)
    return [(m.smiles, m.conformers) for m in molecules]


def sample_and_score(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    tokenizer,
    references: Sequence[tuple[str, Sequence[Chem.Mol]]],
    *,
    samples_per_molecule: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    max_matches: int = 1000,
    device: torch.device | str | None = None,
    hf_model=None,
) -> dict[str, float | int]:
    """Constrained samples for each reference molecule, scored by best RMSD (see the module docstring).

    `logits_fn` gets a LongTensor [B, T] on `device` (CPU when None) and returns logits [B, T, V>=len(tokenizer)].
    `tokenizer`: see `as_hf_tokenizer`. With `hf_model` (a transformers causal LM holding the same
    weights) decoding uses its KV cache instead of a full `logits_fn` forward per new token.
    """
    tokenizer = as_hf_tokenizer(tokenizer)
    if not references:
        return {"conformer_validity": math.nan, "conformer_mean_best_rmsd": math.nan, "conformer_samples": 0}
    precision = next(
        (m.GetIntProp(PRECISION_PROP) for _, mols in references for m in mols if m.HasProp(PRECISION_PROP)),
        DEFAULT_PRECISION,
    )
    positions = next(
        (m.GetProp(POSITIONS_PROP) for _, mols in references for m in mols if m.HasProp(POSITIONS_PROP)), "absolute"
    )
    cfg = SamplingConfig(
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        batch_size=samples_per_molecule,
        constrained=True,
        precision=precision,
        positions=positions,
        seed=seed,
        geometry=False,  # the probe follows what the model learns; the bounds would hide what it has not yet
    )
    if hf_model is not None:
        runner = functools.partial(run_with_cache, hf_model)
    else:
        runner = functools.partial(run_without_cache, logits_fn, device=device)
    logits_device = hf_model.device if hf_model is not None else (device or "cpu")
    outcomes = sample_molecules(
        runner,
        tokenizer,
        [s for s, _ in references],
        [samples_per_molecule] * len(references),
        cfg,
        device=logits_device,
    )
    best = []
    for (_, conformers), samples in zip(references, outcomes):
        heavy = [Chem.RemoveHs(ref) for ref in conformers]
        for o in samples:
            if o.mol is None:
                continue
            values = [best_rms(Chem.Mol(o.mol), ref, max_matches)[0] for ref in heavy]
            finite = [v for v in values if math.isfinite(v)]
            if finite:
                best.append(min(finite))
    total = sum(map(len, outcomes))
    valid = sum(o.mol is not None for samples in outcomes for o in samples)
    return {
        "conformer_validity": valid / total if total else math.nan,
        "conformer_mean_best_rmsd": sum(best) / len(best) if best else math.nan,
        "conformer_samples": total,
    }
