"""Conformers per second: constrained vs free decoding by batch size and worker count, vs RDKit ETKDGv3.

    PYTHONPATH=src .venv/bin/python benchmarks/generation.py [--model HF_DIR] [--molecules 4] [--samples 64]

Without --model, a randomly initialised Qwen3 of the `tiny` training flavor's shape (dim 128,
4 layers) with the compact tokenizer stands in: its coordinates are noise, but its speed is
the speed of the CPU demo model. Every configuration samples the same molecules with the same
seed, constrained (canonical) and free side by side at each batch size, and at one batch size the
constrained rows with the rules on the numbers added one at a time (grammar only, + stereo,
+ geometry: their cost). Besides samples/s, it
times the sampler's step per generated token inside those runs, and on its own at batch 256
with random logits over the compact and over Qwen3's vocabulary (151,936 ids): the work a
GPU's host would add to each decode step. From that it projects the wall time of the
GEOM-DRUGS test set on 8 H100s with a memory-bandwidth model of bf16 decoding (the
assumptions are printed and saved). Writes benchmarks/results/generation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from molgen3D.scoring.baseline import etkdg_baseline  # noqa: E402
from molgen3D.generation.generate import with_model_format  # noqa: E402
from molgen3D.generation.model_io import load_model, model_directory  # noqa: E402
from molgen3D.generation.parallel import sample_parallel  # noqa: E402
from molgen3D.scoring.references import read_references  # noqa: E402
from molgen3D.generation.sampling import DEFAULT_PRECISION, SamplingConfig  # noqa: E402
from molgen3D.generation.token_sampler import SlotSampler  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "generation.json"

OPTIONS = {
    "grammar only (--no-stereo --no-geometry)": dict(stereo=False, geometry=False),
    "+ stereo (--no-geometry)": dict(stereo=True, geometry=False),
    "+ stereo + geometry (default)": dict(stereo=True, geometry=True),
}
"""The rules on the numbers, each row adding one (their cost at `--option-batch`)."""

# GEOM-DRUGS test set and Qwen3-0.6B decoding, for the projection.
GEOM_SAMPLES = 200_000
"""K = 2L summed over the ~1,000 test molecules."""
TOKENS_PER_SAMPLE = 550
"""A conformer of a GEOM-DRUGS molecule with Qwen3's tokenizer (digits are single tokens)."""
PROMPT_TOKENS = 60
QWEN3_06B = {"parameters": 0.6e9, "layers": 28, "kv_heads": 8, "head_dim": 128}
H100_BANDWIDTH = 3.35e12
"""Bytes/s of H100 SXM HBM3."""
QWEN3_VOCAB = 151_936
"""Qwen3's padded output width."""
BANDWIDTH_EFFICIENCY = 0.6
"""Share of peak bandwidth a batched decode step reaches (weights + KV cache reads dominate a step)."""


def qwen_tokenizer(folder: Path):
    """MolGen3D's Qwen3 tokenizer (custom tags), built from the vendored Qwen3 files."""
    from molgen3D.tokenization.build import build_qwen_tokenizers
    from molgen3D.tokenization.load import load_tokenizer

    return load_tokenizer(build_qwen_tokenizers(folder / "qwen")["qwen3_0.6b_custom"])


def random_tiny_model(folder: Path) -> Path:
    """A random `tiny`-shaped Qwen3 saved with the compact tokenizer (built into `folder` if needed)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from molgen3D.tokenization.build import build_compact_tokenizer
    from molgen3D.tokenization.load import load_tokenizer

    tokenizer = load_tokenizer(build_compact_tokenizer(folder / "tokenizer"))
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=-(-len(tokenizer) // 64) * 64,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    model_dir = folder / "model"
    Qwen3ForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


class StepTimer:
    """Wraps `SlotSampler.step` to add up the sampler's own seconds and the tokens it drew."""

    def __init__(self):
        self.seconds, self.rows = 0.0, 0
        self._orig = SlotSampler.step

    def __enter__(self):
        timer, orig = self, self._orig

        def step(sampler, logits):
            start = time.perf_counter()
            live = int(sampler.live.sum())
            try:
                return orig(sampler, logits)
            finally:
                timer.seconds += time.perf_counter() - start
                timer.rows += live

        SlotSampler.step = step
        return self

    def __exit__(self, *exc):
        SlotSampler.step = self._orig


def run(model_dir, smiles, counts, cfg: SamplingConfig, workers: int, loaded=None) -> dict:
    with StepTimer() as timer:
        outcomes, seconds = sample_parallel(
            model_dir, None, smiles, counts, cfg, workers=workers, device="cpu", threads=1, loaded=loaded
        )
    samples = [o for per_mol in outcomes for o in per_mol]
    tokens = sum(o.num_tokens for o in samples)
    valid = sum(o.mol is not None for o in samples)
    result = {
        "batch_size": cfg.batch_size,
        "workers": workers,
        "samples": len(samples),
        "valid": valid,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "samples_per_s": len(samples) / seconds,
        "tokens_per_s": tokens / seconds,
    }
    if workers == 1:
        result["sampler_us_per_token"] = 1e6 * timer.seconds / max(timer.rows, 1)
    return result


def sampler_alone(tokenizer, smiles: list[str], batch: int, vocab_width: int, steps: int) -> dict:
    """Microseconds per token of `SlotSampler.step` alone: `batch` constrained (canonical) rows, random logits
    [batch, vocab_width]. A first pass fills the tables (first visits of states); the second is the steady state."""
    from molgen3D.generation.canonical import CanonicalFilter
    from molgen3D.generation.constrained import NumberDfa, token_table
    from molgen3D.generation.decode_tables import GrammarTables

    table = token_table(tokenizer)
    tables = GrammarTables(table, NumberDfa(DEFAULT_PRECISION, 3), CanonicalFilter(tokenizer, table))
    starts = [tables.add(smiles[k % len(smiles)]) for k in range(batch)]
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn((batch, vocab_width), generator=gen) for _ in range(2)]

    def one_pass() -> tuple[float, int]:
        sampler = SlotSampler(table, tables, starts, list(range(batch)), [10**6] * batch, ["cut"] * batch, slots=batch)
        sampler.load(list(range(batch)))
        seconds, tokens = 0.0, 0
        for k in range(steps):
            live = int(sampler.live.sum())
            if not live:
                break
            start = time.perf_counter()
            sampler.step(logits[k % 2])
            seconds += time.perf_counter() - start
            tokens += live
        return seconds, tokens

    first_s, first_n = one_pass()
    steady_s, steady_n = one_pass()
    return {
        "batch": batch,
        "vocab_width": vocab_width,
        "steps": steps,
        "us_per_token": 1e6 * steady_s / max(steady_n, 1),
        "ms_per_step": 1e3 * steady_s / max(steps, 1),
        "first_pass_us_per_token": 1e6 * first_s / max(first_n, 1),
        "table_states": tables.shared_off.size,
        "table_entries": tables.ids.size,
    }


def project_geom_drugs(sampler_s_per_token: float, batch: int = 256, gpus: int = 8) -> dict:
    """Wall time of the GEOM-DRUGS test set on `gpus` H100s, one sampling process per GPU.

    A decode step reads the bf16 weights and the batch's KV cache (bandwidth-bound at these
    sizes), and the process's sampler then handles every row on one CPU core.
    """
    m = QWEN3_06B
    kv_bytes_per_token = 2 * m["layers"] * m["kv_heads"] * m["head_dim"] * 2
    mean_context = PROMPT_TOKENS + TOKENS_PER_SAMPLE / 2
    step_bytes = 2 * m["parameters"] + batch * mean_context * kv_bytes_per_token
    gpu_step = step_bytes / (H100_BANDWIDTH * BANDWIDTH_EFFICIENCY)
    cpu_step = batch * sampler_s_per_token
    tokens_per_s_per_gpu = batch / (gpu_step + cpu_step)
    total_tokens = GEOM_SAMPLES * TOKENS_PER_SAMPLE
    wall = total_tokens / (gpus * tokens_per_s_per_gpu)
    gpu_only = total_tokens / (gpus * batch / gpu_step)
    return {
        "assumptions": {
            "samples": GEOM_SAMPLES,
            "tokens_per_sample": TOKENS_PER_SAMPLE,
            "prompt_tokens": PROMPT_TOKENS,
            "model": "Qwen3-0.6B bf16",
            **m,
            "batch": batch,
            "gpus": gpus,
            "h100_bandwidth_bytes_per_s": H100_BANDWIDTH,
            "bandwidth_efficiency": BANDWIDTH_EFFICIENCY,
            "sampler_us_per_token": 1e6 * sampler_s_per_token,
            "sampler": "one process per GPU, its sampler on one CPU core, measured here on the tiny model",
        },
        "gpu_step_ms": 1e3 * gpu_step,
        "sampler_step_ms": 1e3 * cpu_step,
        "tokens_per_s_per_gpu": tokens_per_s_per_gpu,
        "wall_hours": wall / 3600,
        "wall_hours_if_sampler_were_free": gpu_only / 3600,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF model folder or alias; default: a random tiny-flavor model")
    parser.add_argument(
        "--references",
        default=str(REPO / "tests" / "fixtures" / "conformers" / "test"),
        help="JSONL split whose molecules are sampled",
    )
    parser.add_argument("--molecules", type=int, default=4)
    parser.add_argument("--samples", type=int, default=64, help="conformers per molecule (all methods)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--sampler-steps", type=int, default=200, help="steps of the sampler-alone timing")
    parser.add_argument("--option-batch", type=int, default=64, help="batch size of the stereo/geometry cost rows")
    parser.add_argument("--max-new-tokens", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(1)
    references, precision = read_references(args.references, max_molecules=args.molecules)
    smiles = [r.smiles for r in references]
    counts = [args.samples] * len(smiles)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else random_tiny_model(Path(tmp))
        loaded = load_model(model_dir, device="cpu")[:2]
        n_params = sum(p.numel() for p in loaded[0].parameters())
        base = dict(max_new_tokens=args.max_new_tokens, precision=precision, seed=0)
        if args.model:  # sample in the decimals and positions the model folder records
            unset = SamplingConfig(**{**base, "precision": None})
            recorded = with_model_format(unset, model_directory(model_dir), precision or DEFAULT_PRECISION)
            base.update(precision=recorded.precision, positions=recorded.positions)
        run(model_dir, smiles[:1], [1], SamplingConfig(batch_size=1, **base), 1, loaded)  # warm-up: tables, grammar
        startup = {}
        for workers in args.workers:
            if workers > 1:  # a pool's start (spawn, imports, model load per process), timed on one sample
                one = SamplingConfig(batch_size=1, **base)
                startup[workers] = run(model_dir, smiles[:1], [1], one, workers)["seconds"]
        free_rows = []
        for batch in args.batch_sizes:
            for workers in args.workers:
                cfg = SamplingConfig(batch_size=batch, **base)
                rows.append(run(model_dir, smiles, counts, cfg, workers, loaded if workers == 1 else None))
                if workers > 1:
                    rows[-1]["pool_start_s"] = startup[workers]
                    busy = max(rows[-1]["seconds"] - startup[workers], 1e-9)
                    rows[-1]["samples_per_s_after_start"] = rows[-1]["samples"] / busy
                print(f"  batch {batch:>3}, {workers} worker(s): {rows[-1]['samples_per_s']:.2f} samples/s", flush=True)
            free_cfg = SamplingConfig(batch_size=batch, constrained=False, **base)
            free_rows.append(run(model_dir, smiles, counts, free_cfg, 1, loaded))
            rows[-1 - (len(args.workers) - 1)]["free_tokens_per_s"] = free_rows[-1]["tokens_per_s"]
            print(f"  batch {batch:>3}, free: {free_rows[-1]['tokens_per_s']:.0f} tokens/s", flush=True)
        options = []
        for name, flags in OPTIONS.items():
            cfg = SamplingConfig(batch_size=args.option_batch, **{**base, **flags})
            options.append({"option": name, **run(model_dir, smiles, counts, cfg, 1, loaded)})
            print(f"  {name}: {options[-1]['tokens_per_s']:.0f} tokens/s", flush=True)
        alone = {"compact": sampler_alone(loaded[1], smiles, 256, len(loaded[1]), args.sampler_steps)}
        qwen = qwen_tokenizer(Path(tmp))
        alone["qwen3"] = sampler_alone(qwen, smiles, 256, QWEN3_VOCAB, args.sampler_steps)
        for name, a in alone.items():
            print(f"  sampler alone, {name}: {a['us_per_token']:.1f} us/token at batch 256", flush=True)
    outcomes, seconds = etkdg_baseline(smiles, counts, seed=2718, num_threads=1)
    valid = sum(o.mol is not None for per_mol in outcomes for o in per_mol)
    etkdg = {
        "samples": sum(counts),
        "valid": valid,
        "seconds": round(seconds, 3),
        "samples_per_s": sum(counts) / seconds,
    }
    sampler_cost = alone["qwen3"]["us_per_token"] / 1e6
    projection = project_geom_drugs(sampler_cost)
    bounded = project_geom_drugs(options[-1]["sampler_us_per_token"] / 1e6)
    # the same with the distance bounds' host cost as measured on the model above (one sampling process per GPU)
    result = {
        "model": "random tiny-flavor Qwen3 (compact tokenizer)" if args.model is None else str(args.model),
        "parameters": n_params,
        "molecules": len(smiles),
        "mean_heavy_atoms": sum(r.conformers[0].GetNumAtoms() for r in references) / len(references),
        "samples_per_molecule": args.samples,
        "max_new_tokens": args.max_new_tokens,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "constrained_canonical": rows,
        "free_decoding": free_rows,
        "options_batch": args.option_batch,
        "options": options,
        "sampler_alone_batch_256": alone,
        "etkdg_1_thread": etkdg,
        "geom_drugs_8xh100_projection": projection,
        "geom_drugs_8xh100_projection_with_geometry": bounded,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{len(smiles)} molecules (mean {result['mean_heavy_atoms']:.1f} heavy atoms), {args.samples} conformers "
        f"each, {n_params / 1e6:.2f}M-parameter model, 1 torch thread per process, "
        f"load avg {result['load_average_1min']:.1f}"
    )
    print(f"{'method':<34}{'samples/s':>10}{'tokens/s':>10}{'validity':>10}{'vs ETKDG':>10}  after pool start")
    for r in rows:
        name = f"model, batch {r['batch_size']}, {r['workers']} worker(s)"
        after = ""
        if r["workers"] > 1:
            after = f"  {r['samples_per_s_after_start']:.2f}/s ({r['pool_start_s']:.0f} s start)"
        print(
            f"{name:<34}{r['samples_per_s']:>10.2f}{r['tokens_per_s']:>10.0f}{r['valid'] / r['samples']:>10.0%}"
            f"{r['samples_per_s'] / etkdg['samples_per_s']:>9.2f}x{after}"
        )
    for free in free_rows:
        name = f"model, free, batch {free['batch_size']}"
        print(
            f"{name:<34}{free['samples_per_s']:>10.2f}{free['tokens_per_s']:>10.0f}"
            f"{free['valid'] / free['samples']:>10.0%}{free['samples_per_s'] / etkdg['samples_per_s']:>9.2f}x"
        )
    free_at = {f["batch_size"]: f["tokens_per_s"] for f in free_rows}
    for o in options:
        ratio = f"{o['tokens_per_s'] / free_at[o['batch_size']]:.2f}x free" if o["batch_size"] in free_at else ""
        print(
            f"{o['option']:<34}{o['samples_per_s']:>10.2f}{o['tokens_per_s']:>10.0f}{o['valid'] / o['samples']:>10.0%}"
            f"  sampler {o['sampler_us_per_token']:.0f} us/token, {ratio}"
        )
    for r in rows:
        if "free_tokens_per_s" in r:
            ratio = r["tokens_per_s"] / r["free_tokens_per_s"]
            print(f"constrained / free tokens/s at batch {r['batch_size']}: {ratio:.2f}x")
    print(
        f"{'ETKDGv3, 1 thread':<34}{etkdg['samples_per_s']:>10.2f}{'-':>10}{etkdg['valid'] / etkdg['samples']:>10.0%}"
        f"{1:>9.2f}x"
    )
    p = projection
    for name, a in alone.items():
        print(
            f"sampler step alone, {name} vocabulary ({a['vocab_width']:,} ids), batch 256: {a['us_per_token']:.1f} us "
            f"per token ({a['ms_per_step']:.2f} ms per step; first pass, filling the tables: "
            f"{a['first_pass_us_per_token']:.0f} us/token)"
        )
    print(
        f"GEOM-DRUGS test set ({GEOM_SAMPLES:,} samples x {TOKENS_PER_SAMPLE} tokens) on 8 H100, batch 256: "
        f"{p['wall_hours']:.1f} h ({p['tokens_per_s_per_gpu']:.0f} tokens/s per GPU; "
        f"GPU step {p['gpu_step_ms']:.1f} ms, sampler {p['sampler_step_ms']:.1f} ms per step; "
        f"{p['wall_hours_if_sampler_were_free']:.2f} h if the sampler were free)"
    )
    print(
        f"  with the distance bounds (the default; {bounded['assumptions']['sampler_us_per_token']:.0f} us per token "
        f"measured above, one sampling process per GPU): {bounded['wall_hours']:.2f} h"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
