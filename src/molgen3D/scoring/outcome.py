"""One sample of one molecule as every method hands it to scoring: a molecule, or a failure reason.

The model's sampler, a samples file and the ETKDG baseline all produce `SampleOutcome`s, so it
lives here, below generation and without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rdkit import Chem

from molgen3D.datasets.skips import SkipLog


@dataclass
class SampleOutcome:
    """One sample of one molecule: a heavy-atom molecule with one conformer, or a failure reason."""

    sample_index: int
    mol: Chem.Mol | None
    failure: str | None
    text: str
    """The conformer body (or the raw text for failures)."""
    num_tokens: int
    extra: dict | None = None
    """Per-sample facts written next to the conformer (`stereo_ok`, `mmff`)."""


def failure_report(molecules: Sequence, outcomes: Sequence[Sequence[SampleOutcome]], max_examples: int = 3) -> dict:
    """Failures by reason: count and the first examples (molecule `.name`, sample index, start of the text)."""
    log = SkipLog(max_examples=max_examples)
    for mol, samples in zip(molecules, outcomes):
        for o in samples:
            if o.failure is not None:
                log.add(o.failure, f"{mol.name} #{o.sample_index}: {o.text[:120]}", unit="sample")
    return log.as_dict()
