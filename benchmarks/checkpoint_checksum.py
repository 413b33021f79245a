"""Cost of checkpoint checksums: DCP save/load time with and without the sha256 manifest.

Saves a state dict shaped like a model + AdamW state (fp32 weights, exp_avg, exp_avg_sq) with
torch.distributed.checkpoint in one process, then times `write_manifest` after the save and
`verify_manifest` before the load. Ratios: (save + manifest) / save and (verify + load) / load.
The files sit in the page cache, so this is the hashing cost, not the disk's.
Writes benchmarks/results/checkpoint_checksum.json.
Usage: .venv/bin/python benchmarks/checkpoint_checksum.py [--mparams 50] [--workers 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from molgen3D.hf import checkpoint_step as ci

REPO = Path(__file__).resolve().parents[1]


def state_dict(mparams: float) -> dict[str, torch.Tensor]:
    """Weights + two AdamW moments, in 1M-element tensors (many files' worth of small and big tensors)."""
    n = max(1, int(mparams))
    return {f"{kind}.{i}": torch.randn(1024, 1024) for kind in ("param", "exp_avg", "exp_avg_sq") for i in range(n)}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mparams", type=float, default=50, help="model size in millions of parameters")
    parser.add_argument("--workers", type=int, default=4, help="hashing threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "checkpoint_checksum.json")
    args = parser.parse_args()

    state = state_dict(args.mparams)
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    rows = {"save": [], "manifest": [], "load": [], "verify": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            step = Path(tmp) / "step-1"
            rows["save"].append(timed(lambda: dcp.save(state, checkpoint_id=str(step))))
            rows["manifest"].append(timed(lambda: ci.write_manifest(step, workers=args.workers)))
            target = {k: torch.empty_like(v) for k, v in state.items()}
            rows["verify"].append(timed(lambda: ci.verify_manifest(step, workers=args.workers)))
            rows["load"].append(timed(lambda: dcp.load(target, checkpoint_id=str(step))))
    med = {k: statistics.median(v) for k, v in rows.items()}
    result = {
        "bytes": nbytes,
        "workers": args.workers,
        "seconds_median": med,
        "hash_gb_per_s": nbytes / med["manifest"] / 1e9,
        "save_ratio": (med["save"] + med["manifest"]) / med["save"],
        "load_ratio": (med["verify"] + med["load"]) / med["load"],
        "torch": torch.__version__,
    }
    print(
        f"{nbytes / 1e9:.2f} GB checkpoint: save {med['save']:.2f}s + manifest {med['manifest']:.2f}s "
        f"(x{result['save_ratio']:.2f}); verify {med['verify']:.2f}s + load {med['load']:.2f}s "
        f"(x{result['load_ratio']:.2f}); hashing {result['hash_gb_per_s']:.2f} GB/s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
