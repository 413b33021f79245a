"""Packed dataloader: tokens/s per tokenizer, and padding of best-fit packing vs concat-and-chunk.

Throughput: one process packs `--units` units (lookahead 100) with the Qwen3 custom and the
compact tokenizer; the baseline is the bare tokenizer on the same lines (read, parse JSON,
format, encode: nothing else), the floor our packing adds to. Padding: the same unit stream
packed at `--seq-len` with lookahead 1 (first-fit), 10 and 100, next to concat-and-chunk,
which wastes nothing but cuts units in two. Unit checks: packed tokens/s with the loader's
per-line SMILES/coordinate check next to the same loader with the check switched off
(alternating runs, best of three each). Rates are per CPU second of this process (the
machine is shared, so wall time is noisy); wall-clock rates are listed too.
Writes benchmarks/results/dataloader.json.
Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dataloader.py [--data data:conformers_train] [--units 3000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from molgen3D.config.paths import resolve_path
from molgen3D.tokenization.load import load_tokenizer
from molgen3D.training.pretraining.dataprocessing import unit_checks
from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset
from molgen3D.training.pretraining.dataprocessing.unit_checks import parse_line
from molgen3D.training.pretraining.dataprocessing.line_index import LineIndex


def default_data() -> str:
    return "data:conformers_train" if resolve_path("data:conformers_train").is_dir() else "data:fixture_train"


class Clock:
    """CPU and wall seconds of a block."""

    def __enter__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu, self.wall = time.process_time() - self.cpu, time.perf_counter() - self.wall


def packed_stream(data: str, tokenizer, seq_len: int, lookahead: int, units: int) -> tuple[dict, Clock]:
    """Pack an endless shuffled stream until `units` units are packed: (metrics, time taken)."""
    ds = JsonlTaggedPackedDataset(data, tokenizer, seq_len, lookahead_limit=lookahead, infinite=True)
    with Clock() as clock:
        for _ in ds:
            if ds.counters.units_packed >= units:
                break
    return ds.metrics(), clock


def tokenize_only(data: str, tokenizer, units: int) -> tuple[list[int], Clock]:
    """The baseline: read, parse and encode `units` lines in file order; token counts and time taken."""
    index = LineIndex(data)
    backend = tokenizer.backend_tokenizer
    lengths: list[int] = []
    i = 0
    with Clock() as clock:
        while len(lengths) < units:
            text, reason, _ = parse_line(index.read(i % len(index)), 16)
            i += 1
            if reason is None:
                lengths.append(len(backend.encode(text, add_special_tokens=False).ids))
    return lengths, clock


def concat_and_chunk(lengths: list[int], seq_len: int) -> dict[str, float]:
    """Units + separators laid end to end and cut every seq_len tokens."""
    position, split = 0, 0
    for n in lengths:
        end = position + n + 1
        split += (position // seq_len) != ((end - 1) // seq_len)
        position = end
    samples = -(-position // seq_len)
    return {
        "padding_fraction": (samples * seq_len - position) / (samples * seq_len),
        "units_split_fraction": split / len(lengths),
    }


def unit_check_cost(data: str, tokenizer, seq_len: int, units: int) -> dict[str, float]:
    """Packed tokens/s with and without `check_unit` (best of three alternating runs each)."""
    real = unit_checks.check_unit
    rates: dict[str, list[float]] = {"with_checks": [], "without_checks": []}
    try:
        for _ in range(3):
            for label in rates:
                unit_checks.check_unit = real if label == "with_checks" else (lambda canonical, embedded: ("", ""))
                metrics, clock = packed_stream(data, tokenizer, seq_len, 100, units)
                rates[label].append(metrics["tokens"] / clock.cpu)
    finally:
        unit_checks.check_unit = real
    best = {f"packed_tokens_per_s_{k}": max(v) for k, v in rates.items()}
    best["with_over_without"] = best["packed_tokens_per_s_with_checks"] / best["packed_tokens_per_s_without_checks"]
    return best


def bench_tokenizer(name: str, alias: str, data: str, seq_len: int, units: int) -> dict:
    tokenizer = load_tokenizer(alias)
    lengths, base = tokenize_only(data, tokenizer, units)
    metrics, packed = packed_stream(data, tokenizer, seq_len, 100, units)
    tokens, n_units = metrics["tokens"], metrics["units_packed"]
    baseline_tokens = sum(lengths) + len(lengths)  # with one separator each, like a packed unit
    row = {
        "tokens_per_unit": sum(lengths) / len(lengths),
        "throughput": {
            "units": int(n_units),
            "packed_tokens_per_s": tokens / packed.cpu,
            "units_per_s": n_units / packed.cpu,
            "samples_per_s": metrics["samples"] / packed.cpu,
            "tokenize_only_tokens_per_s": baseline_tokens / base.cpu,
            "packing_vs_tokenize_only": (tokens / packed.cpu) / (baseline_tokens / base.cpu),
            "wall_packed_tokens_per_s": tokens / packed.wall,
            "wall_tokenize_only_tokens_per_s": baseline_tokens / base.wall,
        },
        "padding_fraction": {},
    }
    for lookahead in (1, 10, 100):
        m, _ = packed_stream(data, tokenizer, seq_len, lookahead, units)
        row["padding_fraction"][f"lookahead_{lookahead}"] = m["padding_fraction"]
        row.setdefault("units_per_sample", {})[f"lookahead_{lookahead}"] = m["units_packed"] / m["samples"]
    chunked = concat_and_chunk(lengths, seq_len)
    row["padding_fraction"]["concat_and_chunk"] = chunked["padding_fraction"]
    row["concat_and_chunk_units_split_fraction"] = chunked["units_split_fraction"]
    row["padding_first_fit_over_best_fit"] = (
        row["padding_fraction"]["lookahead_1"] / row["padding_fraction"]["lookahead_100"]
        if row["padding_fraction"]["lookahead_100"]
        else float("inf")
    )
    row["unit_checks"] = unit_check_cost(data, tokenizer, seq_len, units)
    t = row["throughput"]
    print(
        f"{name:18s} {row['tokens_per_unit']:7.1f} tok/unit  {t['packed_tokens_per_s']:>10,.0f} packed tok/s "
        f"({t['units_per_s']:,.0f} units/s; tokenizer alone {t['tokenize_only_tokens_per_s']:,.0f} tok/s, "
        f"ratio {t['packing_vs_tokenize_only']:.2f})"
    )
    pads = "  ".join(f"{k} {v:.4f}" for k, v in row["padding_fraction"].items())
    split = chunked["units_split_fraction"]
    print(f"{'':18s} padding @ {seq_len}: {pads}; concat-and-chunk splits {split:.1%} of units")
    checks = row["unit_checks"]
    print(
        f"{'':18s} unit checks: {checks['packed_tokens_per_s_with_checks']:,.0f} vs "
        f"{checks['packed_tokens_per_s_without_checks']:,.0f} packed tok/s without "
        f"(ratio {checks['with_over_without']:.3f})"
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="path or alias (default: data:conformers_train, else the fixture)")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--units", type=int, default=3000, help="units packed per measurement")
    parser.add_argument("--qwen-tokenizer", default="tokenizers:qwen3_0.6b_custom")
    parser.add_argument("--compact-tokenizer", default="tokenizers:molgen_compact")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dataloader.json")
    args = parser.parse_args()
    data = args.data or default_data()
    start = time.perf_counter()
    index_lines = len(LineIndex(data))
    print(f"data {data}: {index_lines} lines, indexed in {time.perf_counter() - start:.3f} s")
    tokenizers = {"qwen3_0.6b_custom": args.qwen_tokenizer, "molgen_compact": args.compact_tokenizer}
    rows = {name: bench_tokenizer(name, alias, data, args.seq_len, args.units) for name, alias in tokenizers.items()}
    qwen, compact = rows["qwen3_0.6b_custom"]["throughput"], rows["molgen_compact"]["throughput"]
    result = {
        "data": data,
        "lines": index_lines,
        "tokenizers_used": tokenizers,
        "seq_len": args.seq_len,
        "units_per_measurement": args.units,
        "tokenizers": rows,
        "ratios": {
            "compact_over_qwen_units_per_s": compact["units_per_s"] / qwen["units_per_s"],
            "compact_over_qwen_packed_tokens_per_s": compact["packed_tokens_per_s"] / qwen["packed_tokens_per_s"],
            "qwen_over_compact_tokens_per_unit": rows["qwen3_0.6b_custom"]["tokens_per_unit"]
            / rows["molgen_compact"]["tokens_per_unit"],
        },
    }
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
