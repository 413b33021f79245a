"""Count skipped items by reason and keep the first few examples, for manifests and summaries."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Reason:
    unit: str
    count: int = 0
    examples: list[str] = field(default_factory=list)


class SkipLog:
    """`add("invalid_smiles", "file.csv:12: 'C1CC'")`; `as_dict()` is sorted by reason, so output is stable."""

    def __init__(self, max_examples: int = 5):
        self.max_examples = max_examples
        self._reasons: dict[str, _Reason] = {}

    def add(self, reason: str, example: str, *, unit: str = "molecule", count: int = 1) -> None:
        entry = self._reasons.setdefault(reason, _Reason(unit))
        entry.count += count
        if len(entry.examples) < self.max_examples:
            entry.examples.append(example)

    def count(self, reason: str) -> int:
        entry = self._reasons.get(reason)
        return entry.count if entry else 0

    def as_dict(self) -> dict[str, dict]:
        return {
            reason: {"count": e.count, "unit": e.unit, "examples": list(e.examples)}
            for reason, e in sorted(self._reasons.items())
        }

    def summary(self) -> str:
        if not self._reasons:
            return "skipped: nothing"
        lines = ["skipped:"]
        for reason, e in sorted(self._reasons.items()):
            lines.append(f"  {reason}: {e.count} {e.unit}(s), e.g. {'; '.join(e.examples[:3])}")
        return "\n".join(lines)
