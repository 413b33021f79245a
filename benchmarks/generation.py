"""Conformers per second on CPU: the model (constrained and free decoding) vs RDKit ETKDGv3, same molecules.

    .venv/bin/python benchmarks/generation.py [--model HF_DIR] [--molecules 5] [--samples 8]

Without --model, a randomly initialised Qwen3 of the `tiny` training flavor's shape (dim 128,
4 layers) with the compact tokenizer stands in: its coordinates are noise, but its speed is
the speed of the CPU demo model. A random model never closes a free-running sample, so free
decoding runs to --max-new-tokens; tokens/s compares the two decoders per token. Prints a table
and writes benchmarks/results/generation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from molgen3D.evaluation.baseline import etkdg_baseline  # noqa: E402
from molgen3D.evaluation.generate import load_model, sample_with_model  # noqa: E402
from molgen3D.evaluation.references import read_references  # noqa: E402
from molgen3D.evaluation.sampling import SamplingConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "generation.json"


def random_tiny_model(folder: Path) -> Path:
    """A random `tiny`-shaped Qwen3 saved with the compact tokenizer (built into `folder` if needed)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from molgen3D.tokenization.build import build_compact_tokenizer
    from molgen3D.tokenization.load import load_tokenizer

    tokenizer = load_tokenizer(build_compact_tokenizer(folder / "tokenizer"))
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=-(-len(tokenizer) // 64) * 64, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
        max_position_embeddings=4096, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    model_dir = folder / "model"
    Qwen3ForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def run_model(model, tokenizer, smiles, counts, cfg: SamplingConfig) -> dict:
    outcomes, seconds = sample_with_model(model, tokenizer, smiles, counts, cfg)
    samples = [o for per_mol in outcomes for o in per_mol]
    valid = sum(o.mol is not None for o in samples)
    tokens = sum(o.num_tokens for o in samples)
    return {
        "samples": len(samples), "valid": valid, "tokens": tokens, "seconds": round(seconds, 3),
        "samples_per_s": len(samples) / seconds, "valid_conformers_per_s": valid / seconds,
        "tokens_per_s": tokens / seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF model folder or alias; default: a random tiny-flavor model")
    parser.add_argument("--references", default=str(REPO / "tests" / "fixtures" / "conformers" / "test"),
                        help="JSONL split whose molecules are sampled")
    parser.add_argument("--molecules", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8, help="conformers per molecule (both methods)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (ETKDG uses one thread)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    references, precision = read_references(args.references, max_molecules=args.molecules)
    smiles = [r.smiles for r in references]
    counts = [args.samples] * len(smiles)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or random_tiny_model(Path(tmp))
        model, tokenizer, resolved = load_model(model_dir)
        n_params = sum(p.numel() for p in model.parameters())
        base = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, precision=precision, seed=0)
        sample_with_model(
            model, tokenizer, smiles[:1], [1], SamplingConfig(**base)
        )  # warm-up: token table, first grammar
        constrained = run_model(model, tokenizer, smiles, counts, SamplingConfig(constrained=True, **base))
        free = run_model(model, tokenizer, smiles, counts, SamplingConfig(constrained=False, **base))
    outcomes, seconds = etkdg_baseline(smiles, counts, seed=2718, num_threads=1)
    valid = sum(o.mol is not None for per_mol in outcomes for o in per_mol)
    etkdg = {"samples": sum(counts), "valid": valid, "seconds": round(seconds, 3),
             "samples_per_s": sum(counts) / seconds, "valid_conformers_per_s": valid / seconds}

    result = {
        "model": "random tiny-flavor Qwen3 (compact tokenizer)" if args.model is None else str(resolved),
        "parameters": n_params,
        "molecules": len(smiles),
        "mean_heavy_atoms": sum(r.conformers[0].GetNumAtoms() for r in references) / len(references),
        "samples_per_molecule": args.samples,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "torch_threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "constrained": constrained,
        "free": free,
        "etkdg": etkdg,
        "ratios": {
            "constrained_vs_etkdg_valid_conformers_per_s": constrained["valid_conformers_per_s"]
            / etkdg["valid_conformers_per_s"],
            "constrained_vs_free_tokens_per_s": constrained["tokens_per_s"] / free["tokens_per_s"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{len(smiles)} molecules (mean {result['mean_heavy_atoms']:.1f} heavy atoms), {args.samples} conformers each, "
        f"{n_params / 1e6:.2f}M-parameter model, {args.threads} torch thread(s), "
        f"load avg {result['load_average_1min']:.1f}"
    )
    print(f"{'method':<22}{'samples/s':>11}{'valid/s':>10}{'tokens/s':>10}{'validity':>10}")
    for name, r in (("model, constrained", constrained), ("model, free", free), ("ETKDGv3 (1 thread)", etkdg)):
        tps = f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else "-"
        print(f"{name:<22}{r['samples_per_s']:>11.2f}{r['valid_conformers_per_s']:>10.2f}{tps:>10}"
              f"{r['valid'] / r['samples']:>10.0%}")
    ratios = result["ratios"]
    print(f"constrained / ETKDG valid conformers per s: {ratios['constrained_vs_etkdg_valid_conformers_per_s']:.3f}x; "
          f"constrained / free tokens per s: {ratios['constrained_vs_free_tokens_per_s']:.2f}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
