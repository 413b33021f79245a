"""Pre-flight: does `[training] seq_len` fit the training units? (`check_seq_len`)

The loader cuts a unit longer than `seq_len - 1` tokens (or drops it, with
`truncate_overflow_units = false`) and only counts it, so a short `seq_len` trains on prefixes
with a loss that looks better than a real run's. Before the Trainer starts, the runner tokenizes a
sample of the train split with the run's tokenizer: when more than `REFUSE_SHARE` of the sampled
units would be cut, the run is refused with the share and a length that fits 99% of them; a
smaller, non-zero share is a console warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

REFUSE_SHARE = 0.05
"""Refuse a run when more than this share of the sampled training units would be truncated or dropped."""
SAMPLE_UNITS = 2000
"""Units read for the estimate: the first lines of each file of the split, spread over its files."""


@dataclass(frozen=True)
class LengthEstimate:
    """Token counts of a sample of units against one `seq_len`."""

    units: int
    over: int
    """Sampled units longer than seq_len - 1 tokens."""
    p99: int
    """99th percentile of the sampled units' token counts."""
    longest: int

    @property
    def share(self) -> float:
        return self.over / self.units if self.units else 0.0


def sample_unit_tokens(data_path: str | Path, tokenizer_dir: str | Path, limit: int = SAMPLE_UNITS) -> list[int]:
    """Token counts (no special tokens, as the loader encodes) of up to `limit` units of a split."""
    from molgen3D.datasets.jsonl_paths import expand_paths
    from molgen3D.tokenization.load import load_tokenizer
    from molgen3D.tokenization.stats import read_units

    files = expand_paths(str(data_path))
    per_file = max(1, math.ceil(limit / len(files)))
    units: list[str] = []
    for file in files:
        units += read_units(file, limit=min(per_file, limit - len(units)))
        if len(units) >= limit:
            break
    tokenizer = load_tokenizer(tokenizer_dir)
    return [len(enc.ids) for enc in tokenizer.backend_tokenizer.encode_batch(units, add_special_tokens=False)]


def estimate(token_counts: list[int], seq_len: int) -> LengthEstimate:
    """How many of the counted units exceed `seq_len - 1` tokens (the room a unit and its separator have)."""
    ordered = sorted(token_counts)
    if not ordered:
        return LengthEstimate(0, 0, 0, 0)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return LengthEstimate(len(ordered), sum(n > seq_len - 1 for n in ordered), p99, ordered[-1])


def describe(found: LengthEstimate, seq_len: int, truncate: bool) -> str:
    """The share sentence of the error and the warning."""
    fate = "truncated" if truncate else "dropped"
    return (
        f"{found.share:.1%} of {found.units} sampled training units ({found.over}) are longer than seq_len - 1 = "
        f"{seq_len - 1} tokens and would be {fate} (99th percentile {found.p99} tokens, longest {found.longest})"
    )


def fitting_seq_len(found: LengthEstimate) -> int:
    """A seq_len that holds 99% of the sampled units whole (unit + separator)."""
    return found.p99 + 1


def check_seq_len(job_config, paths) -> str | None:
    """Refuse (`MolGenConfigError` on `[training] seq_len`) or return a warning line, or None when every
    sampled unit fits."""
    from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
    from molgen3D.training.pretraining.config.toml_checks import where_set

    seq_len = job_config.training.seq_len
    truncate = job_config.molgen_data.truncate_overflow_units
    found = estimate(sample_unit_tokens(paths.train_data, paths.tokenizer_dir), seq_len)
    if found.over == 0:
        return None
    if found.share > REFUSE_SHARE:
        raise MolGenConfigError(
            "training.seq_len",
            describe(found, seq_len, truncate) + f"; more than {REFUSE_SHARE:.0%} is refused",
            f"set seq_len = {fitting_seq_len(found)} or more (fits 99% of the sampled units whole; "
            f"{found.longest + 1} fits all of them)",
            where=where_set(job_config, "training.seq_len"),
        )
    return f"[training] seq_len = {seq_len}: {describe(found, seq_len, truncate)}"
