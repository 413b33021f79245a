"""Does GRPO post-training beat more pretraining for the same CPU minutes? Before/after on held-out molecules.

From a start model (the demo's CPU model: `benchmarks/posttrain_start_model.py` builds or finds it),
1. `--minutes` of GRPO (`molgen3d posttrain`, the shipped `cpu_tiny.toml` with the model, data set and
   time limit set here), rewards against the training split;
2. the control: the same minutes of more next-token training (AdamW, the pretraining peak lr, warmup
   then linear decay to 0 over the time budget, as a WSDS mini run) on the training units in the
   model's format, from the same start;
3. `molgen3d evaluate` of the start model, the GRPO model and the control on the first
   `--eval-molecules` molecules of the held-out test split (K = 2L): COV-R/MAT-R/COV-P/MAT-P as
   means with standard errors over molecules (and the paired difference to the start), stereo,
   PoseBusters per check, bond/angle MAE.
GRPO and the control run at once, one core each (`--sequential`: one after the other). GRPO takes the
shipped TOML's settings; `--set optimizer.lr=1e-4` (any key) overrides one.
Writes benchmarks/results/posttrain.json and benchmarks/figures/posttrain_rewards.png (reward by term and KL
per step); `--evaluate-only` re-scores the three models of an earlier `--out` (posttrain_eval<N>.json).

Usage: .venv/bin/python benchmarks/posttrain.py --minutes 3 --eval-molecules 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tomllib
from pathlib import Path

import numpy as np
from over_molecules import method_figures, paired

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FIGURE = HERE / "figures" / "posttrain_rewards.png"
SHIPPED = HERE.parent / "src" / "molgen3D" / "config" / "posttrain" / "cpu_tiny.toml"


def evaluate_model(
    model: str, references: str, out: Path, molecules: int, max_new_tokens: int, workers: int = 1
) -> dict:
    from molgen3D.evaluation.evaluate import EvaluateConfig, evaluate
    from molgen3D.scoring.options import ScoringOptions
    from molgen3D.generation.sampling import SamplingConfig

    metrics = evaluate(
        EvaluateConfig(
            references=references,
            out=out,
            model=model,
            max_molecules=molecules,
            threads=1,
            workers=workers,
            scoring=ScoringOptions(posebusters="mol_fast"),
            progress=False,
            sampling=SamplingConfig(max_new_tokens=max_new_tokens),
        )
    )
    return method_figures(metrics)


def control_training(model_dir: str, units_dir: Path, out: Path, seconds: float, lr: float, batch: int = 8) -> dict:
    """More next-token training from the start model for `seconds` (the control), saved as an HF folder."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from molgen3D.tokenization.stats import read_units

    torch.set_num_threads(1)

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).train()
    units = list(read_units(units_dir))
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    eot = tok.eos_token_id
    start, steps, losses = time.perf_counter(), 0, []
    while (elapsed := time.perf_counter() - start) < seconds:
        frac = elapsed / seconds
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, frac / 0.1) * min(1.0, (1.0 - frac) / 0.5)
        ids = [tok.encode(units[i], add_special_tokens=False) + [eot] for i in rng.integers(0, len(units), batch)]
        width = max(map(len, ids))
        x = torch.full((batch, width), eot)
        labels = torch.full((batch, width), -100)
        for r, seq in enumerate(ids):
            x[r, : len(seq)] = torch.tensor(seq)
            labels[r, : len(seq)] = torch.tensor(seq)
        loss = model(input_ids=x, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
        losses.append(loss.item())
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for name in ("coordinate_format.json", "generation_config.json"):
        if (Path(model_dir) / name).is_file():
            shutil.copy2(Path(model_dir) / name, out / name)
    return {"steps": steps, "units": steps * batch, "first_loss": losses[0], "last_loss": losses[-1]}


def _control_process(args: tuple, result: Path) -> None:
    result.write_text(json.dumps(control_training(*args)), encoding="utf-8")


def plot_rewards(history: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [h for h in history if "reward" in h]
    steps = [h["step"] for h in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({k for h in rows for k in h if k.startswith("rewards/") and k.endswith("/mean")}):
        a.plot(steps, [h.get(key) for h in rows], label=key.split("/")[1])
    total = np.array([h["reward"] for h in rows], dtype=float)
    a.plot(steps, total, "k-", lw=1, alpha=0.4, label="total (weighted)")
    window = min(25, len(total))
    a.plot(
        steps[window - 1 :],
        np.convolve(total, np.ones(window) / window, "valid"),
        "k-",
        lw=2,
        label="total, running mean",
    )
    a.set_xlabel("step")
    a.set_ylabel("mean reward term")
    a.legend(fontsize=8)
    b.plot(steps, [h.get("kl", float("nan")) for h in rows], label="KL to start")
    b.plot(steps, [h.get("reward_std", float("nan")) for h in rows], label="reward std over the batch")
    b.set_yscale("symlog", linthresh=0.1)  # the KL estimate spikes on rare tokens; its median is ~0.5
    b.set_xlabel("step")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def train_both(args, model: str, stored: Path, data: Path) -> tuple[dict, float, dict]:
    """GRPO from the start model and the control (more next-token training) for the same minutes."""
    from molgen3D.training.posttraining.config import load_config
    from molgen3D.training.posttraining.trainer import run_posttrain

    overrides = {
        "model": model,
        "dataset": str(stored),
        "out": str(args.out / "grpo"),
        "steps": args.steps,
        "max_minutes": args.minutes,
        "resume": False,
        "threads": 1,
        "report_to": ["tensorboard"],
        "rollout": {
            "group_size": args.group_size,
            "molecules_per_step": args.molecules_per_step,
            "max_new_tokens": args.max_new_tokens,
        },
    }
    for item in args.set:
        key, _, value = item.partition("=")
        *sections, name = key.split(".")
        table = overrides
        for section in sections:
            table = table.setdefault(section, {})
        table[name] = tomllib.loads(f"v = {value}")["v"]
    control_args = (model, data / "train", args.out / "control", args.minutes * 60.0, args.control_lr)
    control_result = args.out / "control.json"
    args.out.mkdir(parents=True, exist_ok=True)
    worker = None
    if not args.sequential:
        import multiprocessing

        worker = multiprocessing.get_context("spawn").Process(
            target=_control_process, args=(control_args, control_result)
        )
        worker.start()
    t = time.perf_counter()
    grpo = run_posttrain(load_config(SHIPPED, overrides))
    grpo_seconds = time.perf_counter() - t
    plot_rewards(grpo["log_history"], FIGURE)
    if worker is None:
        control = control_training(*control_args[:3], grpo_seconds, args.control_lr)
        control_result.write_text(json.dumps(control), encoding="utf-8")
    else:
        worker.join()
        if worker.exitcode:
            raise SystemExit(f"the control training failed (exit code {worker.exitcode})")
        control = json.loads(control_result.read_text(encoding="utf-8"))
    return grpo, grpo_seconds, control


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=Path, default=RESULTS / "posttrain_start_model.json")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--eval-molecules", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=1500)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--molecules-per-step", type=int, default=2)
    parser.add_argument("--control-lr", type=float, default=3e-3)
    parser.add_argument(
        "--steps", type=int, default=10_000, help="GRPO steps (a decaying schedule spans them; --minutes stops first)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a key of the shipped posttrain TOML, e.g. optimizer.lr=3e-4 (TOML value syntax)",
    )
    parser.add_argument("--eval-workers", type=int, default=2)
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="run the control after GRPO for GRPO's measured seconds (default: both at once, one core each, "
        "for --minutes)",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_posttrain"))
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="train nothing: evaluate the start, GRPO and control models an earlier run left in --out (e.g. on "
        "more --eval-molecules)",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    start = json.loads(args.start.read_text(encoding="utf-8"))
    model, stored, data = start["model"], Path(start["stored"]), Path(start["data"])
    test = str(stored / "test")
    evals = {}
    t = time.perf_counter()
    evals["start"] = evaluate_model(
        model,
        test,
        args.out / f"eval_start_{args.eval_molecules}",
        args.eval_molecules,
        args.max_new_tokens,
        args.eval_workers,
    )
    eval_seconds = time.perf_counter() - t
    if args.evaluate_only:
        grpo = json.loads((args.out / "grpo" / "summary.json").read_text(encoding="utf-8"))
        control = json.loads((args.out / "control.json").read_text(encoding="utf-8"))
        grpo_seconds = grpo["seconds"]
    else:
        grpo, grpo_seconds, control = train_both(args, model, stored, data)
    for name, folder in (("grpo", grpo["final_model"]), ("control", str(args.out / "control"))):
        evals[name] = evaluate_model(
            folder,
            test,
            args.out / f"eval_{name}_{args.eval_molecules}",
            args.eval_molecules,
            args.max_new_tokens,
            args.eval_workers,
        )

    steps = [h for h in grpo["log_history"] if "reward" in h]
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "schedule": "sequential" if args.sequential else "GRPO and the control at once, one core each",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "start_model": model,
        "eval_molecules": args.eval_molecules,
        "minutes": args.minutes,
        "grpo_seconds": round(grpo_seconds, 1),
        "eval_seconds_per_model": round(eval_seconds, 1),
        "grpo_steps": grpo["steps"],
        "rollouts_per_step": args.group_size * args.molecules_per_step,
        "grpo_per_step": [
            {
                k: h.get(k)
                for k in h
                if k.startswith("rewards/")
                or k
                in (
                    "step",
                    "reward",
                    "reward_std",
                    "frac_reward_zero_std",
                    "kl",
                    "validity",
                    "rollout_time_share",
                    "sampling_seconds",
                    "scoring_seconds",
                    "step_time",
                )
            }
            for h in steps
        ],
        "control": control,
        "evaluations": {k: {kk: vv for kk, vv in v.items() if kk != "per_molecule"} for k, v in evals.items()},
        "paired_vs_start": {k: paired(evals[k], evals["start"]) for k in ("grpo", "control")},
        "per_molecule": {k: v["per_molecule"] for k, v in evals.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / (f"posttrain_eval{args.eval_molecules}.json" if args.evaluate_only else "posttrain.json")
    target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for name, ev in evals.items():
        s = ev["summary"]
        cells = "  ".join(f"{k} {s[k]['mean']:.3f}+-{s[k]['se'] or 0:.3f}" for k in s if s[k]["mean"] is not None)
        print(f"{name:8s} {cells}  stereo {ev['chemistry']['stereo_ok']}  PB all {ev['posebusters']['all_pass']}")
    for name, diff in result["paired_vs_start"].items():
        print(
            f"{name} - start: "
            + "  ".join(f"{k} {d['mean']:+.3f}+-{d['se'] or 0:.3f}" for k, d in diff.items() if d["mean"] is not None)
        )
    print(f"GRPO: {grpo['steps']} steps in {grpo_seconds:.0f} s; control: {control['steps']} steps")
    print(f"wrote {target}" + ("" if args.evaluate_only else f" and {FIGURE}"))


if __name__ == "__main__":
    main()
