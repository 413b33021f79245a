"""The coverage-vs-threshold figure: COV-R and COV-P of every method on one plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the non-interactive backend)
import numpy as np  # noqa: E402

from molgen3D.files import atomic_output  # noqa: E402


def plot_coverage(curves: dict[str, dict], threshold: float, path: Path, title: str) -> Path:
    """`curves[method] = {"thresholds", "cov_r", "cov_p"}` (fractions) -> a two-panel PNG at `path`."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, key, label in ((axes[0], "cov_r", "COV-R (recall)"), (axes[1], "cov_p", "COV-P (precision)")):
        for method, curve in curves.items():
            x, y = np.asarray(curve["thresholds"], dtype=float), 100 * np.asarray(curve[key], dtype=float)
            at = y[np.argmin(np.abs(x - threshold))] if len(x) else np.nan
            ax.plot(x, y, label=f"{method} ({at:.0f}% at {threshold:g} Å)", lw=2, clip_on=False)
        ax.axvline(threshold, color="grey", ls="--", lw=1)
        ax.text(threshold, 2, f" {threshold:g} Å", color="grey", fontsize=8)
        ax.set_xlabel("RMSD threshold (Å)")
        ax.set_title(label)
        ax.set_xlim(0, 3.0)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("coverage (%), mean over molecules")
    for ax in axes:
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path, "wb") as f:
        fig.savefig(f, dpi=120, format="png")
    plt.close(fig)
    return path
