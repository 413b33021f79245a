"""Quality per training compute: which coordinate format does a small model learn best?

Every variant trains the same model flavor (TorchTitan's Qwen3 from the molgen_qwen3 spec,
tied head) on the same training molecules, with the same tokens per step and the same number of
steps, from the same seed; only how coordinates are written (decimals, frame, relative
positions), how the compact tokenizer cuts them, and how number pieces are initialised differ.
A more compact encoding therefore sees more molecules: that is the trade-off measured. The loop
is a plain PyTorch one (AdamW, warmup, constant, linear decay over the last 20%), with units
concatenated with `<|endoftext|>` and cut into rows of `--seq-len` (no padding).

At `--evals` points along training (the last at the end) each variant reports:
- held-out NLL per coordinate (nats summed over all pieces of one coordinate, delimiter
  included, so splits compare), of its fraction part (against the uniform decimals * ln 10) and
  per structure token of the conformer (atoms, bonds, branches, ring closures);
- on `--eval-molecules` test molecules, K = k_factor * L constrained samples per molecule (L
  reference conformers), turned into absolute coordinates, scored with the project's RMSD and
  GEOM metrics: validity, COV-R and MAT-R at 0.75 A, the COV-R curve, and bond-length MAE of
  valid samples against their molecule's first reference conformer;
and the run reports ETKDGv3 on the same molecules and K, tokens per unit, units seen, tokens/s.
Writes benchmarks/results/learning.json and learning_matr.png / learning_coverage.png.

Usage (2-core CPU): OMP_NUM_THREADS=1 .venv/bin/python benchmarks/learning.py --quick
       .venv/bin/python benchmarks/learning.py --steps 300 --variants a_whole_d4,c_pairs_d3
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from molgen3D.chem.coordinate_format import CoordinateFormat, apply_format  # noqa: E402
from molgen3D.chem.tagged_text import format_unit  # noqa: E402
from molgen3D.tokenization.coordinate_nll import coordinate_nll, uniform_fraction_nll  # noqa: E402

THRESHOLD = 0.75


@dataclass(frozen=True)
class Variant:
    """One way of writing and learning coordinates."""

    split: str = "whole"
    fmt: CoordinateFormat = field(default_factory=CoordinateFormat)
    numeric_init: bool = False
    flavor: str = "tiny"
    document_masking: bool = False
    """Block-causal attention per packed unit (the trainer's `[model] document_masking`, SDPA mask on CPU)."""
    equal_time_as: str | None = None
    """Train for the wall-clock seconds this other variant took (instead of the same steps)."""
    note: str = ""


D = CoordinateFormat
VARIANTS: dict[str, Variant] = {
    "a_whole_d4": Variant(note="today: compact, 4 decimals, as stored"),
    "b_digits_d4": Variant(split="digits", note="one piece per number character (as Qwen3's BPE)"),
    "c_pairs_d4": Variant(split="pairs", note="fraction in 1-2 digit pieces"),
    "d_whole_d2": Variant(fmt=D(decimals=2), note="2 decimals"),
    "d_whole_d3": Variant(fmt=D(decimals=3), note="3 decimals"),
    "e_numinit_d4": Variant(numeric_init=True, note="number-piece embeddings from their value"),
    "f_canonical_d4": Variant(fmt=D(frame="canonical"), note="canonical frame"),
    "g_docmask_d4": Variant(document_masking=True, note="each unit attends only to itself"),
    "h_relative_d4": Variant(fmt=D(positions="relative"), note="offsets from the SMILES-tree parent"),
    "i_small_d4": Variant(flavor="small", equal_time_as="a_whole_d4", note="small flavor, a's wall-clock"),
    "c_pairs_d2": Variant(split="pairs", fmt=D(decimals=2), note="pairs, 2 decimals"),
    "combo_pairs_d2_canon": Variant(split="pairs", fmt=D(decimals=2, frame="canonical"), note="combined"),
    "combo_pairs_d2_rel": Variant(split="pairs", fmt=D(decimals=2, positions="relative"), note="combined"),
    "combo_pairs_d2_canon_rel": Variant(
        split="pairs", fmt=D(decimals=2, frame="canonical", positions="relative"), note="combined"
    ),
    "combo_digits_d2_canon_rel": Variant(
        split="digits", fmt=D(decimals=2, frame="canonical", positions="relative"), note="combined"
    ),
    "j_local_d4": Variant(fmt=D(positions="local"), note="offsets in the frame of the bonds before"),
    "b_digits_d4_canon_local": Variant(
        split="digits", fmt=D(frame="canonical", positions="local"), note="Qwen3-style digits, local positions"
    ),
    "b_digits_d2_canon_local": Variant(
        split="digits", fmt=D(decimals=2, frame="canonical", positions="local"), note="the same, 2 decimals"
    ),
    "combo_pairs_d2_canon_local": Variant(
        split="pairs", fmt=D(decimals=2, frame="canonical", positions="local"), note="combined"
    ),
    "combo_pairs_d2_canon_local_small": Variant(
        split="pairs", fmt=D(decimals=2, frame="canonical", positions="local"), flavor="small", note="combined, small"
    ),
    "combo_pairs_d2_canon_rel_num": Variant(
        split="pairs", fmt=D(decimals=2, frame="canonical", positions="relative"), numeric_init=True, note="combined"
    ),
}
TOKENIZER_OF_SPLIT = {"whole": "molgen_compact", "pairs": "molgen_compact_pairs", "digits": "molgen_compact_digits"}


# ---------------------------------------------------------------- data
def read_split(path: Path) -> list[tuple[str, str]]:
    from molgen3D.datasets.jsonl_paths import expand_paths

    rows = []
    for file in expand_paths([str(path)]):
        with open(file, encoding="utf-8") as f:
            rows += [(d["canonical_smiles"], d["embedded_smiles"]) for d in map(json.loads, f)]
    return rows


def encode_units(tokenizer, rows: list[tuple[str, str]], fmt: CoordinateFormat) -> list[list[int]]:
    texts = [format_unit(s, apply_format(e, fmt)) for s, e in rows]
    return [enc.ids for enc in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]


def token_stream(units: list[list[int]], eot: int, seed: int):
    """Endless stream of ids: units in a fresh seeded order each epoch, each followed by <|endoftext|>."""
    rng = random.Random(seed)
    order = list(range(len(units)))
    while True:
        rng.shuffle(order)
        for i in order:
            yield from units[i]
            yield eot


def batches(stream, batch: int, seq_len: int):
    while True:
        ids = torch.tensor([next(stream) for _ in range(batch * (seq_len + 1))], dtype=torch.long)
        ids = ids.view(batch, seq_len + 1)
        yield ids[:, :-1], ids[:, 1:]


# ---------------------------------------------------------------- model
def build_model(flavor: str, n_tokens: int, eot: int, seed: int, document_masking: bool = False):
    from molgen3D.training.pretraining.document_masking import resolve_attention
    from molgen3D.training.pretraining.torchtitan_model.model import MolGenQwen3Model
    from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import (
        MOLGEN_FLAVORS,
        resolve_vocab_size,
    )

    args = copy.deepcopy(MOLGEN_FLAVORS[flavor])
    args.vocab_size = resolve_vocab_size(n_tokens, args.vocab_size)
    args.eos_id = eot
    args.attn_type, args.attn_mask_type = resolve_attention(document_masking, "auto", cuda=False)
    torch.manual_seed(seed)
    model = MolGenQwen3Model(args)
    with torch.no_grad():
        model.init_weights(buffer_device=torch.device("cpu"))
    return model, args


def apply_numeric_init(model, tokenizer, seed: int) -> int:
    from molgen3D.tokenization.numeric_init import (
        number_piece_values,
        numeric_embedding_rows,
    )

    weight = model.tok_embeddings.weight
    values = number_piece_values(tokenizer.backend_tokenizer.get_vocab())
    ids, rows = numeric_embedding_rows(values, weight.shape[1], float(weight.norm(dim=1).mean()), seed=seed)
    with torch.no_grad():
        weight[ids] = rows
    return len(ids)


def to_hf(model, args, eot: int):
    """The same weights as a transformers Qwen3ForCausalLM (KV-cache sampling)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from molgen3D.hf.export import hf_config
    from molgen3D.hf.state_dict_adapter import (
        MolGenQwen3StateDictAdapter,
    )

    config = hf_config(args, eot_id=eot, torch_dtype="float32")
    config.pop("architectures"), config.pop("model_type")
    lm = Qwen3ForCausalLM(Qwen3Config(**config))
    state = MolGenQwen3StateDictAdapter(args, None).to_hf({k: v.detach() for k, v in model.state_dict().items()})
    missing, unexpected = lm.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"HF conversion: missing {missing}, unexpected {unexpected}")
    lm.tie_weights()
    return lm.eval()


# ---------------------------------------------------------------- sampling and scores
def bond_mae(sample, reference) -> float:
    a, b = sample.GetConformer().GetPositions(), reference.GetConformer().GetPositions()
    pairs = [(bd.GetBeginAtomIdx(), bd.GetEndAtomIdx()) for bd in sample.GetBonds()]
    if not pairs:
        return math.nan
    i, j = np.array(pairs).T
    return float(np.mean(np.abs(np.linalg.norm(a[i] - a[j], axis=1) - np.linalg.norm(b[i] - b[j], axis=1))))


def score(references, outcomes, max_matches: int) -> dict:
    from rdkit import Chem

    from molgen3D.scoring.coverage import (
        DEFAULT_THRESHOLDS,
        coverage_curves,
        coverage_matching,
    )
    from molgen3D.scoring.rmsd import best_rms

    covs, mats, curves, maes = [], [], [], []
    valid = total = 0
    for ref, samples in zip(references, outcomes):
        heavy = [Chem.RemoveHs(m) for m in ref.conformers]
        matrix = np.full((len(heavy), len(samples)), np.nan)
        for j, o in enumerate(samples):
            total += 1
            if o.mol is None:
                continue
            valid += 1
            maes.append(bond_mae(o.mol, heavy[0]))
            for i, r in enumerate(heavy):
                matrix[i, j] = best_rms(Chem.Mol(o.mol), r, max_matches)[0]
        m = coverage_matching(matrix, THRESHOLD)
        covs.append(m["cov_r"])
        mats.append(m["mat_r"])
        curves.append(coverage_curves(matrix)["cov_r"])
    return {
        "validity": valid / total if total else math.nan,
        "cov_r": float(np.nanmean(covs)),
        "mat_r": float(np.nanmean(mats)),
        "bond_mae": float(np.nanmean(maes)) if maes else math.nan,
        "cov_r_curve": [float(v) for v in np.nanmean(curves, axis=0)],
        "thresholds": [float(t) for t in DEFAULT_THRESHOLDS],
    }


def sample_model(lm, tokenizer, references, counts, fmt: CoordinateFormat, seed: int, max_new_tokens: int):
    from molgen3D.generation.decode_loops import run_with_cache
    from molgen3D.generation.sampling import SamplingConfig, sample_molecules

    cfg = SamplingConfig(
        precision=fmt.decimals, positions=fmt.positions, max_new_tokens=max_new_tokens, batch_size=32, seed=seed
    )
    return sample_molecules(
        partial(run_with_cache, lm), tokenizer, [r.smiles for r in references], counts, cfg, device=lm.device
    )


# ---------------------------------------------------------------- one variant
def lr_at(step: int, steps: int, lr: float) -> float:
    warmup, decay_start = max(1, steps // 10), int(steps * 0.8)
    if step < warmup:
        return lr * (step + 1) / warmup
    if step < decay_start:
        return lr
    return lr * max(0.0, (steps - step) / max(1, steps - decay_start))


def run_variant(name: str, v: Variant, ctx: dict, args, seconds_of: dict) -> dict:
    from molgen3D.tokenization.load import eot_id, load_tokenizer

    tokenizer = load_tokenizer(ctx["tokenizer_root"] / TOKENIZER_OF_SPLIT[v.split])
    eot = eot_id(tokenizer)
    train = encode_units(tokenizer, ctx["train"], v.fmt)
    valid_texts = [format_unit(s, apply_format(e, v.fmt)) for s, e in ctx["valid"]]
    model, margs = build_model(v.flavor, len(tokenizer), eot, args.seed, v.document_masking)
    numeric_rows = apply_numeric_init(model, tokenizer, args.seed) if v.numeric_init else 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8)
    stream = batches(token_stream(train, eot, args.seed), args.batch, args.seq_len)
    tokens_per_unit = float(np.mean([len(u) + 1 for u in train]))
    steps, time_budget = args.steps, None
    if v.equal_time_as:
        time_budget = seconds_of[v.equal_time_as]
        steps = max(args.evals, int(time_budget / run_probe_steps(name, ctx, args)))
    eval_at = sorted({max(1, round(steps * (k + 1) / args.evals)) for k in range(args.evals)})
    points, train_seconds = [], 0.0
    print(
        f"\n[{name}] {v.note}; tokenizer {TOKENIZER_OF_SPLIT[v.split]} ({len(tokenizer)}), format {v.fmt.name}, "
        f"{tokens_per_unit:.1f} tokens/unit, flavor {v.flavor}, {steps} steps"
        + (f", {numeric_rows} numeric rows" if numeric_rows else "")
        + (f" (fit to {v.equal_time_as}'s {time_budget:.0f} s)" if time_budget else ""),
        flush=True,
    )
    for step in range(1, steps + 1):
        model.train()
        begin = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step - 1, steps, args.lr)
        x, y = next(stream)
        loss = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_seconds += time.perf_counter() - begin
        if step in eval_at:
            points.append(
                evaluate_point(
                    name,
                    v,
                    model,
                    margs,
                    tokenizer,
                    eot,
                    valid_texts,
                    ctx,
                    args,
                    step,
                    train_seconds,
                    tokens_per_unit,
                    loss.item(),
                )
            )
    seconds_of[name] = train_seconds
    return {
        "variant": {
            "split": v.split,
            "format": v.fmt.to_dict(),
            "numeric_init": v.numeric_init,
            "document_masking": v.document_masking,
            "flavor": v.flavor,
            "equal_time_as": v.equal_time_as,
            "note": v.note,
        },
        "tokenizer": TOKENIZER_OF_SPLIT[v.split],
        "vocab": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_per_unit": tokens_per_unit,
        "steps": step,
        "train_seconds": train_seconds,
        "tokens_per_second": step * args.batch * args.seq_len / train_seconds,
        "uniform_fraction_nll": uniform_fraction_nll(v.fmt.decimals),
        "points": points,
    }


def evaluate_point(name, v, model, margs, tokenizer, eot, valid_texts, ctx, args, step, seconds, tpu, loss) -> dict:
    begin = time.perf_counter()
    model.eval()
    nll = coordinate_nll(model, tokenizer, valid_texts, eot, args.seq_len)
    lm = to_hf(model, margs, eot)
    outcomes = sample_model(lm, tokenizer, ctx["references"], ctx["counts"], v.fmt, args.seed, args.max_new_tokens)
    scores = score(ctx["references"], outcomes, args.max_matches)
    tokens = step * args.batch * args.seq_len
    point = {
        "step": step,
        "train_tokens": tokens,
        "units_seen": tokens / tpu,
        "train_seconds": seconds,
        "train_loss": loss,
        **nll,
        **scores,
        "eval_seconds": time.perf_counter() - begin,
    }
    print(
        f"  [{name}] step {step:>4} tokens {tokens:>9,} units {tokens / tpu:>7,.0f} loss {loss:.3f} | "
        f"NLL/coord {nll['nll_per_coordinate']:.2f} (frac {nll['nll_fraction_per_coordinate']:.2f} vs uniform "
        f"{uniform_fraction_nll(v.fmt.decimals):.2f}) struct {nll['nll_per_structure_token']:.3f} | valid "
        f"{scores['validity']:.0%} bondMAE {scores['bond_mae']:.3f} COV-R {scores['cov_r']:.0%} "
        f"MAT-R {scores['mat_r']:.3f} | eval {point['eval_seconds']:.0f} s",
        flush=True,
    )
    return point


# ---------------------------------------------------------------- report
def table(results: dict, etkdg: dict) -> str:
    head = (
        f"{'variant':<30}{'tok/unit':>9}{'units':>8}{'tok/s':>7}{'NLL/crd':>8}{'frac':>6}{'unif':>6}"
        f"{'struct':>7}{'valid':>7}{'bondMAE':>8}{'COV-R':>7}{'MAT-R':>7}"
    )
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        p = r["points"][-1]
        lines.append(
            f"{name:<30}{r['tokens_per_unit']:>9.1f}{p['units_seen']:>8,.0f}{r['tokens_per_second']:>7,.0f}"
            f"{p['nll_per_coordinate']:>8.2f}{p['nll_fraction_per_coordinate']:>6.2f}{r['uniform_fraction_nll']:>6.2f}"
            f"{p['nll_per_structure_token']:>7.3f}{p['validity']:>7.0%}{p['bond_mae']:>8.3f}{p['cov_r']:>7.0%}"
            f"{p['mat_r']:>7.3f}"
        )
    lines.append(
        f"{'ETKDGv3 (same molecules, K)':<30}{'':>62}{etkdg['validity']:>7.0%}{etkdg['bond_mae']:>8.3f}"
        f"{etkdg['cov_r']:>7.0%}{etkdg['mat_r']:>7.3f}"
    )
    return "\n".join(lines)


def plot(results: dict, etkdg: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = ["-", "--", "-.", ":"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (name, r) in enumerate(results.items()):
        ax.plot(
            [p["train_tokens"] for p in r["points"]],
            [p["mat_r"] for p in r["points"]],
            marker="o",
            ls=styles[k // 10 % len(styles)],
            label=name,
        )
    ax.axhline(etkdg["mat_r"], color="k", ls="--", label="ETKDGv3")
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("MAT-R (A, log scale), lower is better")
    ax.set_title("MAT-R vs training tokens (same steps, tokens/step, molecules)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    matr = out_dir / "learning_matr.png"
    fig.savefig(matr, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (name, r) in enumerate(results.items()):
        p = r["points"][-1]
        ax.plot(p["thresholds"], p["cov_r_curve"], ls=styles[k // 10 % len(styles)], label=name)
    ax.plot(etkdg["thresholds"], etkdg["cov_r_curve"], "k--", label="ETKDGv3")
    ax.axvline(THRESHOLD, color="grey", ls=":", lw=1)
    ax.set_xlabel("RMSD threshold (A)")
    ax.set_ylabel("COV-R")
    ax.set_title("coverage (recall) at the end of training")
    ax.legend(fontsize=7)
    fig.tight_layout()
    cov = out_dir / "learning_coverage.png"
    fig.savefig(cov, dpi=120)
    plt.close(fig)
    return [matr, cov]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data:embedded_root", help="prepared data set (train/ valid/ test/)")
    parser.add_argument(
        "--variants",
        default="a_whole_d4,b_digits_d4,c_pairs_d4,d_whole_d2,d_whole_d3,e_numinit_d4,"
        "f_canonical_d4,h_relative_d4,i_small_d4",
        help=f"comma list of {', '.join(VARIANTS)}",
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps per variant")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="instead of --steps: the steps the first variant fits in this many minutes",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--evals", type=int, default=3, help="evaluation points along training (>= 1)")
    parser.add_argument("--eval-molecules", type=int, default=50)
    parser.add_argument("--k-factor", type=int, default=2, help="samples per molecule = k_factor x its references")
    parser.add_argument("--valid-units", type=int, default=200, help="held-out units for NLL")
    parser.add_argument("--max-new-tokens", type=int, default=2500)
    parser.add_argument("--max-matches", type=int, default=1000, help="RDKit GetBestRMS symmetry mapping cap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="12 molecules, K = L, 60 valid units, 60 steps")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "learning.json")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="instead of training: join result files of runs with the same settings (e.g. run in "
        "parallel with different --variants) into --out, table and figures",
    )
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    if args.quick:
        args.eval_molecules, args.k_factor, args.valid_units = min(args.eval_molecules, 12), 1, 60
        args.steps = min(args.steps, 60)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    for n in names:
        ref = VARIANTS[n].equal_time_as
        if ref is not None and (ref not in names or names.index(ref) > names.index(n)):
            parser.error(f"{n} trains for {ref}'s wall-clock time: list {ref} before it")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from molgen3D.config.paths import resolve_path
    from molgen3D.scoring.baseline import etkdg_baseline
    from molgen3D.scoring.references import (
        ReferenceMolecule,
        load_jsonl_references,
        seeded_choice,
    )
    from molgen3D.tokenization.build import build_compact_tokenizers

    data = resolve_path(args.data)
    tokenizer_root = resolve_path("base_paths:tokenizers_root")
    build_compact_tokenizers(tokenizer_root)
    references, _ = load_jsonl_references(data / "test", select=seeded_choice(args.eval_molecules, args.seed))
    references = [ReferenceMolecule(r.smiles, r.conformers, name=r.name) for r in references]
    counts = [args.k_factor * len(r.conformers) for r in references]
    valid_rows = read_split(data / "valid")
    random.Random(args.seed).shuffle(valid_rows)
    ctx = {
        "tokenizer_root": tokenizer_root,
        "train": read_split(data / "train"),
        "valid": valid_rows[: args.valid_units],
        "references": references,
        "counts": counts,
    }
    print(
        f"data {data}: {len(ctx['train'])} training conformers, {len(ctx['valid'])} held-out units, "
        f"{len(references)} test molecules x K = {args.k_factor}L ({sum(counts)} samples)",
        flush=True,
    )

    begin = time.perf_counter()
    etkdg_out, _ = etkdg_baseline([r.smiles for r in references], counts, seed=2718)
    etkdg = score(references, etkdg_out, args.max_matches)
    print(
        f"ETKDGv3: valid {etkdg['validity']:.0%} COV-R {etkdg['cov_r']:.0%} MAT-R {etkdg['mat_r']:.3f} "
        f"bondMAE {etkdg['bond_mae']:.3f} ({time.perf_counter() - begin:.0f} s)",
        flush=True,
    )

    if args.minutes is not None:
        probe = run_probe_steps(names[0], ctx, args)
        args.steps = max(args.evals, int(args.minutes * 60 / probe))
        print(f"--minutes {args.minutes}: {probe:.2f} s/step for {names[0]} -> {args.steps} steps per variant")

    results, seconds_of = {}, {}
    for name in names:
        results[name] = run_variant(name, VARIANTS[name], ctx, args, seconds_of)
        save(args, results, etkdg, ctx, partial_run=name != names[-1])
    print("\n" + table(results, etkdg))
    paths = plot(results, etkdg, args.out.parent)
    print(f"wrote {args.out}, " + ", ".join(map(str, paths)))
    return 0


def run_probe_steps(name: str, ctx: dict, args, n: int = 5) -> float:
    """Seconds per training step of `name` (a few steps, after one warm-up step)."""
    from molgen3D.tokenization.load import eot_id, load_tokenizer

    v = VARIANTS[name]
    tokenizer = load_tokenizer(ctx["tokenizer_root"] / TOKENIZER_OF_SPLIT[v.split])
    eot = eot_id(tokenizer)
    model, _ = build_model(v.flavor, len(tokenizer), eot, args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    stream = batches(token_stream(encode_units(tokenizer, ctx["train"][:500], v.fmt), eot, 0), args.batch, args.seq_len)
    times = []
    for _ in range(n + 1):
        begin = time.perf_counter()
        x, y = next(stream)
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - begin)
    return float(np.mean(times[1:]))


def merge(files: list[Path], out: Path) -> int:
    """One result file, table and figure set from several runs that share molecules and settings."""
    runs = [json.loads(Path(f).read_text(encoding="utf-8")) for f in files]
    keep = ("steps", "batch", "seq_len", "lr", "evals", "eval_molecules", "k_factor", "valid_units", "seed", "data")
    first = {k: runs[0]["settings"][k] for k in keep}
    for f, run in zip(files, runs):
        if {k: run["settings"][k] for k in keep} != first:
            raise SystemExit(f"{f}: settings differ from {files[0]} ({first}); only runs with equal settings merge")
    merged = dict(runs[0])
    merged["variants"] = {name: r for run in runs for name, r in run["variants"].items()}
    merged["merged_from"] = [str(f) for f in files]
    merged["partial"] = any(run["partial"] for run in runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    print(table(merged["variants"], merged["etkdg"]))
    paths = plot(merged["variants"], merged["etkdg"], out.parent)
    print(f"wrote {out}, " + ", ".join(map(str, paths)))
    return 0


def save(args, results: dict, etkdg: dict, ctx: dict, partial_run: bool) -> None:
    out = {
        "device": f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tokens_per_step": args.batch * args.seq_len,
        "threshold": THRESHOLD,
        "eval_molecules": len(ctx["references"]),
        "samples": sum(ctx["counts"]),
        "etkdg": etkdg,
        "variants": results,
        "partial": partial_run,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
