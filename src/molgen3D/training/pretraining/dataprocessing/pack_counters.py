"""The packed dataset's counters: lines read, units packed, tokens, padding, skips by reason.

Cumulative per dataset iterator (one rank, one worker) and small (ints and a few examples), so
torchdata snapshots them with every batch; `merge_counters` sums workers and ranks and
`summarize` flattens them for the metrics processor and the console.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from molgen3D.training.pretraining.dataprocessing.unit_checks import SKIP_REASONS

MAX_EXAMPLES = 3


@dataclass
class PackCounters:
    """Cumulative counts of one dataset iterator (one rank, one worker)."""

    lines_read: int = 0
    """Lines taken from the shard, skipped ones included."""
    units_read: int = 0
    """Lines that became units (entered the pending window)."""
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    """Skipped lines by reason (SKIP_REASONS)."""
    skip_examples: dict[str, list[str]] = field(default_factory=lambda: {r: [] for r in SKIP_REASONS})
    """The first MAX_EXAMPLES `file:line: detail` per reason."""
    truncated: int = 0
    """Units cut to seq_len - 1 tokens."""
    samples: int = 0
    """Samples emitted."""
    units_packed: int = 0
    """Units inside emitted samples."""
    tokens: int = 0
    """Real tokens (units + separators) inside emitted samples."""
    padding_tokens: int = 0
    """Padding tokens inside emitted samples."""


def merge_counters(states: Iterable[Mapping[str, Any]]) -> PackCounters:
    """Sum the counters of several workers/ranks (examples: the first MAX_EXAMPLES overall)."""
    total = PackCounters()
    for state in states:
        for name, value in state.items():
            if name == "skipped":
                for reason, n in value.items():
                    total.skipped[reason] = total.skipped.get(reason, 0) + n
            elif name == "skip_examples":
                for reason, examples in value.items():
                    kept = total.skip_examples.setdefault(reason, [])
                    kept.extend(examples[: MAX_EXAMPLES - len(kept)])
            else:
                setattr(total, name, getattr(total, name) + value)
    return total


def summarize(counters: PackCounters) -> dict[str, float]:
    """Flat numbers for training metrics: totals, padding fraction, skips by reason."""
    emitted = counters.tokens + counters.padding_tokens
    out: dict[str, float] = {
        "samples": counters.samples,
        "lines_read": counters.lines_read,
        "units_read": counters.units_read,
        "units_packed": counters.units_packed,
        "tokens": counters.tokens,
        "padding_tokens": counters.padding_tokens,
        "padding_fraction": counters.padding_tokens / emitted if emitted else 0.0,
        "truncated": counters.truncated,
        "skipped_total": sum(counters.skipped.values()),
    }
    out.update({f"skipped/{reason}": n for reason, n in counters.skipped.items()})
    return out
