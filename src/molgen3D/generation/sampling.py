"""Sampling conformers: settings, the plan of samples, running it, and turning texts into molecules.

`plan_jobs` lists every sample (prompt, budget) and the samples that fail before decoding;
`run_batches` decodes them through a runner (`decode_loops.run_with_cache` bound to a model,
or `run_without_cache` bound to a forward) with a `token_sampler.SlotSampler` over the
grammars' device tables (`decode_tables.GrammarTables`); `finish_sample` turns a generated
text into a molecule or a failure reason, and `assemble` puts the samples back per molecule.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rdkit import Chem
from tqdm.auto import tqdm

from molgen3D.chem.coordinate_format import POSITIONS, CoordinateFormat, to_absolute_text
from molgen3D.chem.enriched_smiles import EnrichedSmilesError, decode, strip_coordinates
from molgen3D.chem.tagged_text import CONFORMER_CLOSE, CONFORMER_OPEN, EOT, format_prompt
from molgen3D.scoring.checks import GRAPH_MISMATCH, sample_failure  # noqa: F401  (a failure reason of this module)
from molgen3D.generation.canonical import canonical_filter
from molgen3D.generation.constrained import MoleculeGrammar, NumberDfa, token_table
from molgen3D.generation.decode_tables import GrammarTables
from molgen3D.generation.coordinate_guard import CoordinateGuard
from molgen3D.generation.token_sampler import DEAD_END, SequenceResult, SlotSampler  # noqa: F401  (DEAD_END: a reason)
from molgen3D.scoring.outcome import SampleOutcome

log = logging.getLogger(__name__)

# Failure reasons (a sample is valid iff it has none).
MAX_NEW_TOKENS = "max_new_tokens"
NO_OPEN_TAG = "no_conformer_tag"
UNTERMINATED = "unterminated"
PARSE_ERROR = "parse_error"
UNREPRESENTABLE = "unrepresentable_smiles"
PROMPT_TOO_LONG = "prompt_too_long"
CONTEXT_FULL = "context_full"

DEFAULT_PRECISION = 4


@dataclass
class SamplingConfig:
    """How conformers are sampled (shared by `generate`, `evaluate` and the benchmark)."""

    temperature: float = 1.0
    """Softmax temperature; 0 = greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    max_new_tokens: int = 2500
    """Cap on generated tokens per sample; a sample that reaches it is counted as failed."""
    batch_size: int = 16
    """Sequences decoded together (a finished one is replaced by the next pending sample at once)."""
    constrained: bool = True
    """Force the prompt's structure and let the model write only the coordinates (--no-constrained: free decoding)."""
    canonical: bool = True
    """Under constrained decoding, only the tokenizer's own tokenizations of the text (--no-canonical: any split)."""
    precision: int | None = None
    """Decimals of every coordinate in the training data, enforced by constrained decoding; None = the reference
    data's (evaluate) or 4."""
    max_int_digits: int = 3
    """Longest integer part of a coordinate under constrained decoding."""
    positions: str | None = None
    """'absolute', 'relative' (offsets from the SMILES-tree parent) or 'local' (those offsets in the
    frame of the bonds before; both placed before decoding); None = the model's recorded format, else absolute."""
    seed: int = 0
    """Seed of the sampling generator."""
    stereo: bool = True
    """Under constrained decoding, the numbers that decide a specified centre's handedness or double bond's
    cis/trans may only take values giving the prompt's stereo (--no-stereo: the model's choice)."""
    geometry: bool = True
    """Under constrained decoding, each atom may only be written where its distances to the atoms before it stay
    within RDKit's distance-geometry bounds (bonds and angles +-5%, farther pairs +-10%: rings close, heavy atoms
    keep apart) and an aromatic atom near its ring's plane; where no value can, the bounds are relaxed a level at
    a time and the step is counted (--no-geometry: the model's numbers; about 2x faster on CPU)."""

    def __post_init__(self):
        checks = [
            (self.temperature >= 0, "--temperature must be >= 0"),
            (0.0 < self.top_p <= 1.0, "--top-p must be in (0, 1]"),
            (self.max_new_tokens >= 1, "--max-new-tokens must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.precision is None or self.precision >= 0, "--precision must be >= 0"),
            (self.max_int_digits >= 1, "--max-int-digits must be >= 1"),
            (self.positions in (None, *POSITIONS), f"--positions must be one of {', '.join(POSITIONS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message} (sampling settings: {self})")


def finish_sample(
    text: str, canonical_smiles: str, stop: str | None, positions: str | None = None
) -> tuple[Chem.Mol | None, str | None, str]:
    """(molecule, failure reason, conformer body) from the generated text of a `[SMILES]canonical[/SMILES]` prompt.

    A sample is valid iff it is `[CONFORMER]body[/CONFORMER]` (optionally followed by
    `<|endoftext|>`), `body` decodes, and `checks.sample_failure` finds nothing (usable
    coordinates, the prompt's graph). With relative or local `positions` the offsets are placed into
    absolute coordinates first (`body` stays as written).
    """
    if stop is not None:
        return None, stop, text
    if not text.startswith(CONFORMER_OPEN):
        return None, NO_OPEN_TAG, text
    body = text[len(CONFORMER_OPEN) :]
    if body.endswith(EOT):
        body = body[: -len(EOT)]
    if not body.endswith(CONFORMER_CLOSE):
        return None, UNTERMINATED, body
    body = body[: -len(CONFORMER_CLOSE)]
    try:
        mol = decode(to_absolute_text(body, CoordinateFormat(positions=positions or "absolute")))
    except (EnrichedSmilesError, ValueError, RuntimeError):
        return None, PARSE_ERROR, body
    failure = sample_failure(mol, canonical_smiles, graph_text=strip_coordinates(body))
    if failure is not None:
        return None, failure, body
    return mol, None, body


Runner = Callable[[Sequence[Sequence[int]], SlotSampler, int], None]

UNIT_BATCHES = 16
"""Samples per unit of work (what one worker decodes with refill) in batches: a few units per worker keep
workers evenly busy; bigger units keep the batch full longer."""


@dataclass(frozen=True)
class Job:
    """One sample to draw: molecule `mol`, sample `index`, its prompt ids and its new-token budget."""

    mol: int
    index: int
    prompt: tuple[int, ...]
    limit: int
    cut_reason: str


def sample_seed(seed: int, smiles: str, index: int) -> int:
    """The seed of one sample's generator: a function of the run seed, the molecule and the sample index only."""
    digest = hashlib.sha256(f"{seed}\0{smiles}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def plan_jobs(
    tokenizer,
    smiles: Sequence[str],
    counts: Sequence[int],
    cfg: SamplingConfig,
    *,
    max_context: int | None = None,
) -> tuple[list[list[Job]], dict[int, list[SampleOutcome]]]:
    """Units of jobs (similar prompt lengths together, longest first) and the samples failed before decoding.

    A molecule the grammar cannot write, or whose prompt does not fit `max_context` (the
    model's context) with room for one token, fails every sample up front. Otherwise a
    sample's budget is `max_new_tokens`, cut to what the context leaves (`context_full`).
    """
    table = token_table(tokenizer)
    dfa = _dfa(cfg)
    failed: dict[int, list[SampleOutcome]] = {}
    jobs: list[Job] = []
    for i, (smi, count) in enumerate(zip(smiles, counts)):
        if cfg.constrained:
            try:
                MoleculeGrammar(smi, table, dfa)
            except (EnrichedSmilesError, ValueError) as exc:
                failed[i] = [SampleOutcome(s, None, UNREPRESENTABLE, str(exc), 0) for s in range(count)]
                continue
        prompt = tuple(tokenizer.encode(format_prompt(smi), add_special_tokens=False))
        limit, reason = cfg.max_new_tokens, MAX_NEW_TOKENS
        if max_context is not None:
            room = max_context - len(prompt)
            if room < 1:
                detail = f"prompt of {len(prompt)} tokens, model context {max_context}"
                failed[i] = [SampleOutcome(s, None, PROMPT_TOO_LONG, detail, 0) for s in range(count)]
                continue
            if room < limit:
                limit, reason = room, CONTEXT_FULL
        jobs += [Job(i, s, prompt, limit, reason) for s in range(count)]
    jobs.sort(key=lambda job: (-len(job.prompt), job.mol, job.index))
    unit = cfg.batch_size * UNIT_BATCHES
    return [jobs[k : k + unit] for k in range(0, len(jobs), unit)], failed


def _dfa(cfg: SamplingConfig) -> NumberDfa:
    return NumberDfa(DEFAULT_PRECISION if cfg.precision is None else cfg.precision, cfg.max_int_digits)


MAX_TABLE_ROWS = 2_000_000
"""Grammar states kept between runs of a process (~100 bytes each with their entries); past it, tables restart."""
_TABLES: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def grammar_tables(tokenizer, cfg: SamplingConfig, device) -> GrammarTables:
    """The process's decoding tables for this tokenizer and these settings: filled states are reused by later
    runs (a library's chunks, evaluate's repeats), up to `MAX_TABLE_ROWS`."""
    per_tokenizer = _TABLES.setdefault(tokenizer, {})
    key = (cfg.precision, cfg.max_int_digits, cfg.canonical, str(device))
    tables = per_tokenizer.get(key)
    if tables is None or tables.shared_off.size > MAX_TABLE_ROWS:
        canonical = canonical_filter(tokenizer) if cfg.canonical else None
        tables = per_tokenizer[key] = GrammarTables(token_table(tokenizer), _dfa(cfg), canonical, device)
    return tables


def coordinate_guard(tokenizer, cfg: SamplingConfig, tables: GrammarTables) -> CoordinateGuard:
    """The guard of `tables` for `cfg`'s positions and rules, kept with them (its rows follow theirs)."""
    key = ("guard", cfg.positions or "absolute", cfg.stereo, cfg.geometry, cfg.precision, cfg.max_int_digits)
    key += (cfg.canonical, str(tables.device))
    per_tokenizer = _TABLES[tokenizer]
    guard = per_tokenizer.get(key)
    if guard is None or guard.tables is not tables:
        guard = CoordinateGuard(tables, cfg.positions, stereo=cfg.stereo, geometry=cfg.geometry)
        per_tokenizer[key] = guard
    return guard


GUARD_COUNTS = (
    ("stereo_fallback_steps", "fallback_steps"),
    ("geometry_relaxed_steps", "geometry_relaxed_steps"),
    ("geometry_fallback_steps", "geometry_fallback_steps"),
    ("guarded_steps", "guarded_steps"),
)
"""(stats name, guard counter) of the steps of a run; the per-molecule counts (`CoordinateGuard.molecule_counts`:
rules, unguarded elements, bounded atoms) are summed over the run's molecules."""


def run_batches(
    runner: Runner,
    tokenizer,
    smiles: Sequence[str],
    batches: Sequence[Sequence[Job]],
    cfg: SamplingConfig,
    *,
    progress: bool = False,
    device="cpu",
    stats: dict | None = None,
) -> list[list[SequenceResult]]:
    """Decode every unit of jobs; results align with `batches`. Each sample's draws depend on its own seed only.

    `device`: where the logits are (the model's device); the grammar tables live there too.
    `stats`, when given, receives the canonical filter's fallbacks (tokens drawn and states
    where it rejected every allowed token, so all were kept).
    """
    table = token_table(tokenizer)
    tables = grammar_tables(tokenizer, cfg, device) if cfg.constrained else None
    guard = coordinate_guard(tokenizer, cfg, tables) if tables is not None and (cfg.stereo or cfg.geometry) else None
    counted = GUARD_COUNTS if guard is not None else ()
    guard_before = {name: getattr(guard, attr) for name, attr in counted}
    out = []
    fallback_steps = 0
    bar = tqdm(total=sum(map(len, batches)), desc="sampling", unit="sample", disable=not progress)
    for batch in batches:
        starts = [tables.add(smiles[job.mol]) for job in batch] if tables is not None else None
        if guard is not None:
            guard.update()
        sampler = SlotSampler(
            table,
            tables,
            starts,
            [sample_seed(cfg.seed, smiles[job.mol], job.index) for job in batch],
            [job.limit for job in batch],
            [job.cut_reason for job in batch],
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            slots=cfg.batch_size,
            device=device,
            guard=guard,
        )
        runner([list(job.prompt) for job in batch], sampler, table.eos_id)
        out.append(list(sampler.results))
        fallback_steps += int(sampler.fallback_steps)
        bar.update(len(batch))
    bar.close()
    fallback_states = tables.fallback_states if tables is not None else 0
    if tables is not None:
        tables.fallback_states = 0
    if fallback_steps:
        log.warning(
            "canonical tokenization: %d tokens drawn in %d grammar states where the tokenizer's own split was "
            "not allowed (any split kept there)",
            fallback_steps,
            fallback_states,
        )
    guarded = {name: getattr(guard, attr) - guard_before[name] for name, attr in counted}
    per_molecule = {}
    if guard is not None:
        per_molecule = {smiles[job.mol]: guard.molecule_counts[smiles[job.mol]] for batch in batches for job in batch}
        for counts in per_molecule.values():
            for name, value in counts.items():
                guarded[name] = guarded.get(name, 0) + value
    if guarded.get("stereo_fallback_steps") or guarded.get("stereo_unguarded"):
        log.warning(
            "stereo: %d specified centres/double bonds left free, %d steps where no value gave the prompt's "
            "stereo (all kept)",
            guarded.get("stereo_unguarded", 0),
            guarded["stereo_fallback_steps"],
        )
    if (
        guarded.get("geometry_relaxed_steps")
        or guarded.get("geometry_fallback_steps")
        or guarded.get("geometry_unbounded")
    ):
        log.warning(
            "geometry: of %d guarded steps, %d kept only relaxed distance bounds and %d none (the stereo's "
            "candidates kept); %d molecules without distance bounds",
            guarded["guarded_steps"],
            guarded["geometry_relaxed_steps"],
            guarded["geometry_fallback_steps"],
            guarded.get("geometry_unbounded", 0),
        )
    if stats is not None:
        stats.update(fallback_steps=fallback_steps, fallback_states=fallback_states, **guarded)
        stats["per_molecule"] = per_molecule
    return out


def assemble(
    tokenizer,
    smiles: Sequence[str],
    batches: Sequence[Sequence[Job]],
    results: Sequence[Sequence[SequenceResult]],
    failed: dict[int, list[SampleOutcome]],
    positions: str | None = None,
) -> list[list[SampleOutcome]]:
    """Per molecule, its samples in sample-index order: decoded results and up-front failures.

    `positions` as in `SamplingConfig.positions` (offsets are placed before decoding).
    """
    outcomes: list[list[SampleOutcome]] = [list(failed.get(i, [])) for i in range(len(smiles))]
    for batch, batch_results in zip(batches, results):
        for job, res in zip(batch, batch_results):
            text = tokenizer.decode(res.token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            mol, failure, body = finish_sample(text, smiles[job.mol], res.stop, positions)
            outcomes[job.mol].append(SampleOutcome(job.index, mol, failure, body, len(res.token_ids)))
    for samples in outcomes:
        samples.sort(key=lambda o: o.sample_index)
    return outcomes


def sample_molecules(
    runner: Runner,
    tokenizer,
    smiles: Sequence[str],
    counts: Sequence[int],
    cfg: SamplingConfig,
    *,
    progress: bool = False,
    max_context: int | None = None,
    device="cpu",
) -> list[list[SampleOutcome]]:
    """`counts[i]` samples for each canonical SMILES.

    `runner(prompts, sampler, pad_id)` drives the model (`run_with_cache` bound to a model, or
    `run_without_cache` bound to a forward) whose logits are on `device`. Every requested
    sample comes back, valid or not.
    """
    batches, failed = plan_jobs(tokenizer, smiles, counts, cfg, max_context=max_context)
    results = run_batches(runner, tokenizer, smiles, batches, cfg, progress=progress, device=device)
    return assemble(tokenizer, smiles, batches, results, failed, cfg.positions)
