"""The decoding loops: one token per step for a batch of conformer samples.

`BatchSampler` holds the per-sequence state (grammar state when constrained, generated ids,
stop reason) and turns one step's logits into the next tokens: mask to the grammar's allowed
tokens, temperature, top-p, draw. Two drivers feed it logits:
- `run_with_cache`: a transformers causal LM with a KV cache (left-padded prompts, finished
  rows dropped from the batch as they stop), for `molgen3d generate` / `evaluate`;
- `run_without_cache`: a plain `logits_fn(input_ids)` forward over the whole sequence, for the
  training-time probe (the TorchTitan model has no cache).
`finish_sample` turns the generated text into a molecule or a failure reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rdkit import Chem
from tqdm.auto import tqdm

from molgen3D.chem.coordinate_format import POSITIONS, CoordinateFormat, to_absolute_text
from molgen3D.chem.enriched_smiles import EnrichedSmilesError, decode, strip_coordinates
from molgen3D.chem.tagged_text import CONFORMER_CLOSE, CONFORMER_OPEN, EOT, format_prompt
from molgen3D.scoring.checks import GRAPH_MISMATCH, sample_failure  # noqa: F401  (a failure reason of this module)
from molgen3D.generation.canonical import CanonicalFilter
from molgen3D.generation.constrained import Allowed, MoleculeGrammar, NumberDfa, TokenTable, token_table
from molgen3D.scoring.outcome import SampleOutcome

# Failure reasons (a sample is valid iff it has none).
MAX_NEW_TOKENS = "max_new_tokens"
DEAD_END = "grammar_dead_end"
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
    """Sequences decoded together."""
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


@dataclass
class SequenceResult:
    """What one sampled sequence produced."""

    token_ids: list[int]
    stop: str | None
    """None when it ended normally ([/CONFORMER], <|endoftext|> or grammar end), else a failure reason."""


def draw(
    scores: torch.Tensor,
    temperature: float,
    top_p: float,
    generator: torch.Generator | Sequence[torch.Generator] | None,
) -> torch.Tensor:
    """Row-wise choice from unnormalised `scores` (-inf = forbidden): greedy at temperature 0, else nucleus sampling.

    `generator` may be one generator per row: then each row's draw depends only on its own
    generator, so a sample does not change with the batch it lands in (workers, resume).
    """
    if temperature <= 0:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = (sorted_p.cumsum(dim=-1) - sorted_p) >= top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    # Inverse-CDF draw: exact, and much faster than torch.multinomial on wide rows.
    cdf = probs.cumsum(dim=-1)
    if isinstance(generator, (list, tuple)):
        u = torch.cat([torch.rand((1, 1), generator=g) for g in generator]) * cdf[:, -1:]
    else:
        u = torch.rand((probs.shape[0], 1), generator=generator) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


class BatchSampler:
    """Per-sequence decoding state and the step from logits to next tokens."""

    def __init__(
        self,
        table: TokenTable,
        grammars: Sequence[MoleculeGrammar | None],
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int | Sequence[int] = 2500,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        cut_reasons: Sequence[str] | None = None,
        canonical: CanonicalFilter | None = None,
    ):
        self.table = table
        self.grammars = list(grammars)
        self.states = [g.start if g is not None else None for g in self.grammars]
        self.tokens: list[list[int]] = [[] for _ in self.grammars]
        self.texts = ["" for _ in self.grammars]
        self.stops: list[str | None] = [None] * len(self.grammars)
        self.done = np.zeros(len(self.grammars), dtype=bool)
        n = len(self.grammars)
        self.limits = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
        self.cut_reasons = list(cut_reasons) if cut_reasons is not None else [MAX_NEW_TOKENS] * n
        self.temperature, self.top_p = temperature, top_p
        self.generator = generator
        self.canonical = canonical

    def step(self, logits: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """Next token of each sequence in `rows` from its last-position `logits` [len(rows), V].

        Finished sequences get `<|endoftext|>` (their logits are ignored). Sampling runs on CPU.
        """
        logits = logits[:, : self.table.vocab_size].float().cpu()
        out = torch.full((len(rows),), self.table.eos_id, dtype=torch.long)
        constrained = [(k, r) for k, r in enumerate(rows) if not self.done[r] and self.grammars[r] is not None]
        free = [(k, r) for k, r in enumerate(rows) if not self.done[r] and self.grammars[r] is None]
        if constrained:
            self._step_constrained(logits, constrained, out)
        if free:
            picked = draw(logits[[k for k, _ in free]], self.temperature, self.top_p, self._generators(free))
            for (k, r), tok in zip(free, picked.tolist()):
                out[k] = tok
                self._append(r, tok)
                if tok in self.table.stop_ids or self.texts[r].endswith(CONFORMER_CLOSE):
                    self.done[r] = True
                else:
                    self._check_length(r)
        return out

    def _step_constrained(self, logits: torch.Tensor, pairs: list[tuple[int, int]], out: torch.Tensor) -> None:
        allowed = [self.grammars[r].allowed(self.states[r]) for _, r in pairs]
        sizes = np.array([len(a.ids) for a in allowed])
        choice = np.zeros(len(pairs), dtype=np.int64)
        open_rows = np.flatnonzero(sizes > 1)  # one allowed token: forced, nothing to draw
        if open_rows.size:
            width = int(sizes[open_rows].max())
            ids = np.zeros((open_rows.size, width), dtype=np.int64)
            for j, row in enumerate(open_rows):
                ids[j, : sizes[row]] = allowed[row].ids
            valid = torch.from_numpy(np.arange(width)[None, :] < sizes[open_rows][:, None])
            scores = logits[[pairs[row][0] for row in open_rows]].gather(1, torch.from_numpy(ids))
            scores = scores.masked_fill(~valid, float("-inf"))
            pending = list(range(open_rows.size))
            while pending:
                picked = draw(
                    scores[pending],
                    self.temperature,
                    self.top_p,
                    self._generators([pairs[open_rows[j]] for j in pending]),
                )
                pending = [
                    j
                    for j, c in zip(pending, picked.tolist())
                    if not self._accept(
                        scores, j, open_rows[j], pairs[open_rows[j]][1], allowed[open_rows[j]], c, choice
                    )
                ]
        for (k, r), a, c in zip(pairs, allowed, choice.tolist()):
            if len(a.ids) == 0:
                self.done[r], self.stops[r] = True, DEAD_END
                continue
            tok = int(a.ids[c])
            out[k] = tok
            self._append(r, tok)
            self.states[r] = (int(a.next_items[c]), int(a.next_subs[c]))
            if self.grammars[r].is_end(self.states[r]):
                self.done[r] = True
            else:
                self._check_length(r)

    def _accept(self, scores: torch.Tensor, j: int, row: int, r: int, a: Allowed, c: int, choice: np.ndarray) -> bool:
        """Keep draw `c` of row `r` unless the canonical filter rejects it; a rejected token is masked for the redraw.

        Drawing again from the masked scores is drawing from the distribution renormalised over
        the canonical tokens, without testing every allowed token. When every token is rejected
        the last draw is kept and counted as a fallback.
        """
        if self.canonical is None or self.canonical.accepts(
            self.tokens[r], int(a.ids[c]), self.grammars[r], (int(a.next_items[c]), int(a.next_subs[c]))
        ):
            choice[row] = c
            return True
        scores[j, c] = float("-inf")
        if torch.isinf(scores[j]).all():
            self.canonical.fallbacks += 1
            choice[row] = c
            return True
        return False

    def _generators(self, pairs):
        if isinstance(self.generator, (list, tuple)):
            return [self.generator[r] for _, r in pairs]
        return self.generator

    def _append(self, r: int, tok: int) -> None:
        self.tokens[r].append(tok)
        self.texts[r] += self.table.strings[tok]

    def _check_length(self, r: int) -> None:
        if len(self.tokens[r]) >= self.limits[r]:
            self.done[r], self.stops[r] = True, self.cut_reasons[r]

    @property
    def all_done(self) -> bool:
        return bool(self.done.all())

    def results(self) -> list[SequenceResult]:
        return [SequenceResult(t, s) for t, s in zip(self.tokens, self.stops)]


@torch.no_grad()
def run_with_cache(model, prompts: Sequence[Sequence[int]], sampler: BatchSampler, pad_id: int) -> None:
    """Decode until every sequence stops, with a transformers KV cache; rows leave the batch as they finish."""
    device = model.device
    width = max(map(len, prompts))
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for b, p in enumerate(prompts):
        input_ids[b, width - len(p) :] = torch.as_tensor(p, dtype=torch.long)
        mask[b, width - len(p) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    rows = list(range(len(prompts)))
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache, next_pos = out.past_key_values, positions[:, -1] + 1
    while True:
        tokens = sampler.step(out.logits[:, -1, :], rows)
        keep = [k for k, r in enumerate(rows) if not sampler.done[r]]
        if not keep:
            return
        tokens = tokens.to(device)
        if len(keep) < len(rows):
            index = torch.as_tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(index)
            rows = [rows[k] for k in keep]
            tokens, mask, next_pos = tokens[index], mask[index], next_pos[index]
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], dim=1)
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        next_pos = next_pos + 1


@torch.no_grad()
def run_without_cache(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    prompts: Sequence[Sequence[int]],
    sampler: BatchSampler,
    pad_id: int,
    device: torch.device | str | None = None,
) -> None:
    """Decode with a full forward per step; sequences are right-padded, so causal attention never sees the pad."""
    seqs = [list(p) for p in prompts]
    while not sampler.all_done:
        rows = [r for r in range(len(seqs)) if not sampler.done[r]]
        width = max(len(seqs[r]) for r in rows)
        batch = torch.full((len(rows), width), pad_id, dtype=torch.long)
        for k, r in enumerate(rows):
            batch[k, : len(seqs[r])] = torch.as_tensor(seqs[r], dtype=torch.long)
        logits = logits_fn(batch.to(device) if device is not None else batch)
        last = torch.as_tensor([len(seqs[r]) - 1 for r in rows], device=logits.device)
        tokens = sampler.step(logits[torch.arange(len(rows), device=logits.device), last], rows)
        for k, r in enumerate(rows):
            seqs[r].append(int(tokens[k]))


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


Runner = Callable[[Sequence[Sequence[int]], BatchSampler, int], None]


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
    """Batches of jobs (similar prompt lengths together, longest first) and the samples failed before decoding.

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
    return [jobs[k : k + cfg.batch_size] for k in range(0, len(jobs), cfg.batch_size)], failed


def _dfa(cfg: SamplingConfig) -> NumberDfa:
    return NumberDfa(DEFAULT_PRECISION if cfg.precision is None else cfg.precision, cfg.max_int_digits)


def run_batches(
    runner: Runner,
    tokenizer,
    smiles: Sequence[str],
    batches: Sequence[Sequence[Job]],
    cfg: SamplingConfig,
    *,
    progress: bool = False,
) -> list[list[SequenceResult]]:
    """Decode every batch; results align with `batches`. Each sample draws from its own seeded generator."""
    table = token_table(tokenizer)
    dfa = _dfa(cfg)
    grammars: dict[int, MoleculeGrammar] = {}
    canonical = CanonicalFilter(tokenizer, table) if cfg.constrained and cfg.canonical else None
    out = []
    bar = tqdm(total=sum(map(len, batches)), desc="sampling", unit="sample", disable=not progress)
    for batch in batches:
        if cfg.constrained:
            for job in batch:
                if job.mol not in grammars:
                    grammars[job.mol] = MoleculeGrammar(smiles[job.mol], table, dfa)
        sampler = BatchSampler(
            table,
            [grammars.get(job.mol) for job in batch],
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=[job.limit for job in batch],
            cut_reasons=[job.cut_reason for job in batch],
            generator=[
                torch.Generator().manual_seed(sample_seed(cfg.seed, smiles[job.mol], job.index)) for job in batch
            ],
            canonical=canonical,
        )
        runner([list(job.prompt) for job in batch], sampler, table.eos_id)
        out.append(sampler.results())
        bar.update(len(batch))
    bar.close()
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
) -> list[list[SampleOutcome]]:
    """`counts[i]` samples for each canonical SMILES, in batches of similar prompt length.

    `runner(prompts, sampler, pad_id)` drives the model (`run_with_cache` bound to a model, or
    `run_without_cache` bound to a forward). Every requested sample comes back, valid or not.
    """
    batches, failed = plan_jobs(tokenizer, smiles, counts, cfg, max_context=max_context)
    results = run_batches(runner, tokenizer, smiles, batches, cfg, progress=progress)
    return assemble(tokenizer, smiles, batches, results, failed, cfg.positions)
