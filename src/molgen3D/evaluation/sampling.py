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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rdkit import Chem
from rdkit.rdBase import BlockLogs
from tqdm.auto import tqdm

from molgen3D.chem.enriched_smiles import EnrichedSmilesError, decode, strip_coordinates
from molgen3D.chem.units import CONFORMER_CLOSE, CONFORMER_OPEN, EOT, format_prompt
from molgen3D.evaluation.constrained import MoleculeGrammar, NumberDfa, TokenTable, token_table

# Failure reasons (a sample is valid iff it has none).
MAX_NEW_TOKENS = "max_new_tokens"
DEAD_END = "grammar_dead_end"
NO_OPEN_TAG = "no_conformer_tag"
UNTERMINATED = "unterminated"
PARSE_ERROR = "parse_error"
GRAPH_MISMATCH = "graph_mismatch"
UNREPRESENTABLE = "unrepresentable_smiles"

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
    precision: int | None = None
    """Decimals of every coordinate in the training data, enforced by constrained decoding; None = the reference
    data's (evaluate) or 4."""
    max_int_digits: int = 3
    """Longest integer part of a coordinate under constrained decoding."""
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
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message} (sampling settings: {self})")


@dataclass
class SampleOutcome:
    """One sample of one molecule: a heavy-atom molecule with one conformer, or a failure reason."""

    sample_index: int
    mol: Chem.Mol | None
    failure: str | None
    text: str
    """The conformer body (or the raw text for failures)."""
    num_tokens: int


@dataclass
class SequenceResult:
    """What one sampled sequence produced."""

    token_ids: list[int]
    stop: str | None
    """None when it ended normally ([/CONFORMER], <|endoftext|> or grammar end), else a failure reason."""


def draw(scores: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Row-wise choice from unnormalised `scores` (-inf = forbidden): greedy at temperature 0, else nucleus sampling."""
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
        max_new_tokens: int = 2500,
        generator: torch.Generator | None = None,
    ):
        self.table = table
        self.grammars = list(grammars)
        self.states = [g.start if g is not None else None for g in self.grammars]
        self.tokens: list[list[int]] = [[] for _ in self.grammars]
        self.texts = ["" for _ in self.grammars]
        self.stops: list[str | None] = [None] * len(self.grammars)
        self.done = np.zeros(len(self.grammars), dtype=bool)
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.generator = generator

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
            picked = draw(logits[[k for k, _ in free]], self.temperature, self.top_p, self.generator)
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
            picked = draw(scores.masked_fill(~valid, float("-inf")), self.temperature, self.top_p, self.generator)
            choice[open_rows] = picked.numpy()
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

    def _append(self, r: int, tok: int) -> None:
        self.tokens[r].append(tok)
        self.texts[r] += self.table.strings[tok]

    def _check_length(self, r: int) -> None:
        if len(self.tokens[r]) >= self.max_new_tokens:
            self.done[r], self.stops[r] = True, MAX_NEW_TOKENS

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
        input_ids[b, width - len(p):] = torch.as_tensor(p, dtype=torch.long)
        mask[b, width - len(p):] = 1
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
            input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos[:, None],
            past_key_values=cache, use_cache=True,
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


def finish_sample(text: str, canonical_smiles: str, stop: str | None) -> tuple[Chem.Mol | None, str | None, str]:
    """(molecule, failure reason, conformer body) from the generated text of a `[SMILES]canonical[/SMILES]` prompt.

    A sample is valid iff it is `[CONFORMER]body[/CONFORMER]` (optionally followed by
    `<|endoftext|>`), `body` decodes, and the decoded graph is the prompt's.
    """
    if stop is not None:
        return None, stop, text
    if not text.startswith(CONFORMER_OPEN):
        return None, NO_OPEN_TAG, text
    body = text[len(CONFORMER_OPEN):]
    if body.endswith(EOT):
        body = body[: -len(EOT)]
    if not body.endswith(CONFORMER_CLOSE):
        return None, UNTERMINATED, body
    body = body[: -len(CONFORMER_CLOSE)]
    try:
        mol = decode(body)
    except (EnrichedSmilesError, ValueError, RuntimeError):
        return None, PARSE_ERROR, body
    if strip_coordinates(body) != canonical_smiles:
        with BlockLogs():
            same = Chem.MolToSmiles(Chem.RemoveHs(mol)) == canonical_smiles
        if not same:
            return None, GRAPH_MISMATCH, body
    return mol, None, body


Runner = Callable[[Sequence[Sequence[int]], BatchSampler, int], None]


def sample_molecules(
    runner: Runner,
    tokenizer,
    smiles: Sequence[str],
    counts: Sequence[int],
    cfg: SamplingConfig,
    *,
    progress: bool = False,
) -> list[list[SampleOutcome]]:
    """`counts[i]` samples for each canonical SMILES, in batches of similar prompt length.

    `runner(prompts, sampler, pad_id)` drives the model (`run_with_cache` bound to a model, or
    `run_without_cache` bound to a forward). Every requested sample comes back, valid or not.
    """
    table = token_table(tokenizer)
    dfa = NumberDfa(DEFAULT_PRECISION if cfg.precision is None else cfg.precision, cfg.max_int_digits)
    results: list[list[SampleOutcome]] = [[] for _ in smiles]
    grammars: list[MoleculeGrammar | None] = []
    jobs = []
    for i, (smi, count) in enumerate(zip(smiles, counts)):
        grammar = None
        if cfg.constrained:
            try:
                grammar = MoleculeGrammar(smi, table, dfa)
            except (EnrichedSmilesError, ValueError) as exc:
                results[i] = [SampleOutcome(s, None, UNREPRESENTABLE, str(exc), 0) for s in range(count)]
                grammars.append(None)
                continue
        grammars.append(grammar)
        prompt = tokenizer.encode(format_prompt(smi), add_special_tokens=False)
        jobs += [(len(prompt), i, s, prompt) for s in range(count)]
    jobs.sort(key=lambda job: (-job[0], job[1], job[2]))
    generator = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(total=len(jobs), desc="sampling", unit="sample", disable=not progress)
    for start in range(0, len(jobs), cfg.batch_size):
        batch = jobs[start:start + cfg.batch_size]
        sampler = BatchSampler(
            table, [grammars[i] for _, i, _, _ in batch], temperature=cfg.temperature, top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens, generator=generator,
        )
        runner([p for *_, p in batch], sampler, table.eos_id)
        for (_, i, s, _), res in zip(batch, sampler.results()):
            text = tokenizer.decode(res.token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            mol, failure, body = finish_sample(text, smiles[i], res.stop)
            results[i].append(SampleOutcome(s, mol, failure, body, len(res.token_ids)))
        bar.update(len(batch))
    bar.close()
    for outcomes in results:
        outcomes.sort(key=lambda o: o.sample_index)
    return results
