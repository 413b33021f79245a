"""The Python parts of benchmarks/gpu_check.sh: document masking vs padded units, sampling speed, the report.

    python benchmarks/gpu_check.py masking  --out FILE   packed units with document masking (the explicit
        mask, and on CUDA flex and varlen) against the same units run one by one, padded (plain causal
        attention): loss and gradient norm of the same batch, forward and backward, bf16 autocast on CUDA
    python benchmarks/gpu_check.py sampling --out FILE   constrained vs free decoding tokens/s of a random
        model of the flavor's shape (0.6B on CUDA, bf16, batch 256; tiny on CPU)
    python benchmarks/gpu_check.py report --work DIR --out FILE   one table and one JSON from the steps' files

RoPE makes attention depend on relative positions only, so a unit packed at any offset and cut by
the document mask must give the per-token losses it gives alone; only targets inside a unit count
(the token after a unit's eos belongs to the next unit). On CPU the same code runs on the tiny
flavor (explicit mask only: flex has no CPU backward, varlen no CPU kernel), which the tests use.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURE_TEST = REPO / "tests" / "fixtures" / "conformers" / "test"
EOS = 0
LOSS_RTOL = 1e-2
"""bf16: a loss over ~8k tokens agrees to about 3 significant digits."""
GRAD_RTOL = 3e-2
FP32_RTOL = 1e-4


def packed_units(batch: int, seq_len: int, lengths: tuple[int, int], vocab: int, seed: int) -> torch.Tensor:
    """[batch, seq_len] of units of random lengths, each ending in EOS (the last one cut by the row's end)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab, (batch, seq_len), generator=g)
    for row in range(batch):
        at = -1
        while True:
            at += int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=g))
            if at >= seq_len:
                break
            tokens[row, at] = EOS
    return tokens


def unit_spans(tokens: torch.Tensor) -> list[tuple[int, int, int]]:
    """(row, start, end) of every unit: an eos closes the unit before it."""
    spans = []
    for row in range(tokens.shape[0]):
        start = 0
        for at in (tokens[row] == EOS).nonzero().flatten().tolist() + [tokens.shape[1] - 1]:
            if at >= start:
                spans.append((row, start, at + 1))
                start = at + 1
    return spans


def packed_loss(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross entropy over next-token targets inside a unit, and their count."""
    same_unit = torch.ones_like(tokens[:, 1:], dtype=torch.bool) & (tokens[:, :-1] != EOS)
    flat = logits[:, :-1].float()[same_unit]
    return F.cross_entropy(flat, tokens[:, 1:][same_unit], reduction="sum"), int(same_unit.sum())


def padded_loss(model, tokens: torch.Tensor, spans) -> tuple[torch.Tensor, int]:
    """The same loss with every unit alone in its own row (right-padded, plain causal attention)."""
    longest = max(end - start for _, start, end in spans)
    rows = torch.full((len(spans), longest), EOS, dtype=tokens.dtype, device=tokens.device)
    valid = torch.zeros(len(spans), longest - 1, dtype=torch.bool, device=tokens.device)
    for i, (row, start, end) in enumerate(spans):
        unit = tokens[row, start:end]
        rows[i, : len(unit)] = unit
        valid[i, : len(unit) - 1] = unit[:-1] != EOS
    logits = model(rows)
    return F.cross_entropy(logits[:, :-1].float()[valid], rows[:, 1:][valid], reduction="sum"), int(valid.sum())


def _model(args, attn_type: str, mask: str, device: torch.device):
    from molgen3D.training.pretraining.torchtitan_model.model import MolGenQwen3Model

    args = copy.deepcopy(args)
    args.attn_type, args.attn_mask_type = attn_type, mask
    with torch.device("meta"):
        model = MolGenQwen3Model(args)
    model.to_empty(device=device)
    return model


def _grad_norm(model) -> float:
    return math.sqrt(sum(float(p.grad.float().pow(2).sum()) for p in model.parameters() if p.grad is not None))


def masking(flavor: str, backends: list[str], batch: int, seq_len: int, lengths: tuple[int, int], seed: int) -> dict:
    """Loss and gradient norm of each document-masked backend and of the padded units, same weights, same batch."""
    from molgen3D.training.pretraining import patches
    from molgen3D.training.pretraining.document_masking import BLOCK_CAUSAL, model_inputs
    from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import MOLGEN_FLAVORS

    patches.install_varlen_gqa()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    args = copy.deepcopy(MOLGEN_FLAVORS[flavor])
    args.eos_id, args.max_seq_len = EOS, seq_len
    tokens = packed_units(batch, seq_len, lengths, args.vocab_size, seed).to(device)
    spans = unit_spans(tokens.cpu())
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    reference = _model(args, "sdpa", "causal", device)
    torch.manual_seed(seed)
    with torch.no_grad():
        reference.init_weights(buffer_device=device)
    state = reference.state_dict()
    tokenizer = argparse.Namespace(eos_id=EOS)
    results = {}
    for name in ["padded"] + backends:
        model = reference if name == "padded" else _model(args, name, BLOCK_CAUSAL, device)
        if name != "padded":
            with torch.no_grad():
                model.init_weights(buffer_device=device)  # the rotary table is a buffer outside the state dict
            model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with autocast:
            if name == "padded":
                loss_sum, count = padded_loss(model, tokens, spans)
            else:
                loss_sum, count = packed_loss(model(tokens, **model_inputs(model, tokens, tokenizer)), tokens)
        (loss_sum / count).backward()
        if cuda:
            torch.cuda.synchronize()
        results[name] = {
            "loss": float(loss_sum.detach()) / count,
            "targets": count,
            "grad_norm": _grad_norm(model),
            "seconds": round(time.perf_counter() - start, 3),
        }
        if name != "padded":
            del model
    rtol_loss, rtol_grad = (LOSS_RTOL, GRAD_RTOL) if cuda else (FP32_RTOL, FP32_RTOL)
    base = results["padded"]
    for name in backends:
        r = results[name]
        r["loss_rel_diff"] = abs(r["loss"] - base["loss"]) / abs(base["loss"])
        r["grad_norm_rel_diff"] = abs(r["grad_norm"] - base["grad_norm"]) / base["grad_norm"]
        r["equal"] = (
            r["loss_rel_diff"] <= rtol_loss
            and r["grad_norm_rel_diff"] <= rtol_grad
            and r["targets"] == (base["targets"])
        )
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "flavor": flavor,
        "dtype": "bf16 autocast" if cuda else "float32",
        "batch": [batch, seq_len],
        "units": len(spans),
        "tolerance": {"loss_rel": rtol_loss, "grad_norm_rel": rtol_grad},
        "results": results,
        "all_equal": all(results[b]["equal"] for b in backends),
    }


def random_model(folder: Path, flavor: str, tokenizer_dir: Path) -> Path:
    """A randomly initialised HF Qwen3 of the flavor's shape with the tokenizer, saved in `folder`."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from molgen3D.tokenization.load import load_tokenizer
    from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import MOLGEN_FLAVORS

    a = MOLGEN_FLAVORS[flavor]
    tokenizer = load_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=max(a.vocab_size, -(-len(tokenizer) // 64) * 64),
        hidden_size=a.dim,
        intermediate_size=a.hidden_dim,
        num_hidden_layers=a.n_layers,
        num_attention_heads=a.n_heads,
        num_key_value_heads=a.n_kv_heads,
        head_dim=a.head_dim,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        torch_dtype="bfloat16",
    )
    Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sampling(flavor: str, tokenizer: str, batch: int, max_new_tokens: int, molecules: int) -> dict:
    """Tokens/s of constrained and of free decoding, same molecules and seed, one process. Constrained here is
    the grammar with the stereo rules, without the distance bounds (`geometry=False`): a random model's
    numbers sit outside every bound, so its geometry cost says nothing; `generation.py` times that on a
    trained model."""
    from molgen3D.datasets.jsonl_paths import expand_paths, open_jsonl
    from molgen3D.generation.model_io import load_model
    from molgen3D.generation.parallel import sample_parallel
    from molgen3D.generation.sampling import SamplingConfig
    from molgen3D.tokenization.build import tokenizer_dir_or_build

    smiles = []
    for path in expand_paths(str(FIXTURE_TEST)):
        with open_jsonl(path) as f:
            for line in f:
                s = json.loads(line)["canonical_smiles"]
                if s not in smiles:
                    smiles.append(s)
    smiles = smiles[:molecules]
    counts = [-(-batch // len(smiles))] * len(smiles)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tok = tokenizer_dir_or_build(tokenizer, Path(tmp) / "tokenizers")
        model_dir = random_model(Path(tmp) / "model", flavor, tok)
        loaded = load_model(model_dir, device=device, dtype=dtype)[:2]
        for mode, constrained in (("constrained", True), ("free", False)):
            cfg = SamplingConfig(
                batch_size=batch, constrained=constrained, max_new_tokens=max_new_tokens, seed=0, geometry=False
            )
            sample_parallel(model_dir, None, smiles[:1], [1], cfg, device=device, dtype=dtype, loaded=loaded)
            outcomes, seconds = sample_parallel(
                model_dir, None, smiles, counts, cfg, device=device, dtype=dtype, loaded=loaded
            )
            tokens = sum(o.num_tokens for per in outcomes for o in per)
            rows[mode] = {"samples": sum(counts), "tokens": tokens, "seconds": round(seconds, 3)}
            rows[mode]["tokens_per_s"] = tokens / seconds
    return {"flavor": flavor, "device": device, "dtype": dtype, "batch": batch, "max_new_tokens": max_new_tokens,
            **rows}  # fmt: skip


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def report(work: Path) -> tuple[str, dict]:
    """One table (step, verdict, figures) and the JSON that holds every step's figures."""
    steps = {}
    for line in (work / "steps.txt").read_text().splitlines() if (work / "steps.txt").exists() else []:
        name, rc, seconds = line.split()
        steps[name] = {"exit": int(rc), "seconds": int(seconds), "timed_out": int(rc) in (124, 137)}
    doctor, smoke = _load(work / "doctor.json"), _load(work / "gpu_smoke.json")
    masked, sampled = _load(work / "masking.json"), _load(work / "sampling.json")
    rows = []
    if doctor is not None:
        for c in doctor:
            rows.append((f"doctor: {c['name']}", c["verdict"], c["detail"][:110]))
    for run in (smoke or {}).get("runs", []):
        mfu = f"{run['mfu_percent']:.1f}%" if run["mfu_percent"] is not None else "n/a"
        rows.append(
            (
                f"train 0.6B, {run['gpus']} GPU(s), FSDP {run.get('fsdp')}",
                "ok" if run["loss_falls"] else "FLAT",
                f"{run['tokens_per_s_per_gpu']:,.0f} tokens/s/GPU, MFU {mfu}, peak {run['peak_memory_gib']:.1f} GiB, "
                f"loss {run['loss_first']} -> {run['loss_last']}",
            )
        )
    for name, r in ((masked or {}).get("results") or {}).items():
        if name == "padded":
            continue
        rows.append(
            (
                f"document masking: {name} vs padded",
                "ok" if r["equal"] else "DIFFERS",
                f"loss {r['loss']:.4f} (rel {r['loss_rel_diff']:.1e}), grad norm {r['grad_norm']:.4f} "
                f"(rel {r['grad_norm_rel_diff']:.1e}), fwd+bwd {r['seconds']} s",
            )
        )
    if sampled:
        c, f = sampled["constrained"], sampled["free"]
        rows.append(
            (
                f"sampling, batch {sampled['batch']} {sampled['dtype']}",
                "ok",
                f"constrained {c['tokens_per_s']:,.0f} tokens/s, free {f['tokens_per_s']:,.0f} tokens/s "
                f"(ratio {c['tokens_per_s'] / f['tokens_per_s']:.2f})",
            )
        )
    for name, s in steps.items():
        if s["exit"] != 0:
            why = "timed out" if s["timed_out"] else f"exit {s['exit']}"
            rows.append(
                (f"step {name}", "FAILED" if name != "doctor" else "see doctor", f"{why} after {s['seconds']} s")
            )
    width = max(len(r[0]) for r in rows) if rows else 10
    lines = [f"{'check':<{width}}  {'verdict':<10}  figures", "-" * (width + 80)]
    lines += [f"{a:<{width}}  {b:<10}  {c}" for a, b, c in rows]
    result = {"steps": steps, "doctor": doctor, "gpu_smoke": smoke, "masking": masked, "sampling": sampled}
    return "\n".join(lines), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    cuda = torch.cuda.is_available()
    m = sub.add_parser("masking")
    m.add_argument("--flavor", default="0.6B" if cuda else "tiny")
    m.add_argument("--backends", nargs="*", default=["sdpa", "flex", "varlen"] if cuda else ["sdpa"])
    m.add_argument("--batch", type=int, default=2)
    m.add_argument("--seq-len", type=int, default=4096 if cuda else 128)
    m.add_argument("--unit-lengths", type=int, nargs=2, default=[300, 900] if cuda else [10, 40])
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("sampling")
    s.add_argument("--flavor", default="0.6B" if cuda else "tiny")
    s.add_argument("--tokenizer", default="tokenizers:qwen3_0.6b_custom" if cuda else "tokenizers:molgen_compact")
    s.add_argument("--batch", type=int, default=256 if cuda else 4)
    s.add_argument("--max-new-tokens", type=int, default=300 if cuda else 16)
    s.add_argument("--molecules", type=int, default=32 if cuda else 2)
    s.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from molgen3D.files import write_json_atomic

    if args.part == "masking":
        result = masking(args.flavor, args.backends, args.batch, args.seq_len, tuple(args.unit_lengths), args.seed)
        write_json_atomic(args.out, result)
        return 0 if result["all_equal"] else 1
    if args.part == "sampling":
        write_json_atomic(
            args.out, sampling(args.flavor, args.tokenizer, args.batch, args.max_new_tokens, args.molecules)
        )
        return 0
    table, result = report(args.work)
    print(table)
    write_json_atomic(args.out, result)
    print(f"wrote {args.out} (logs of every step: {args.work / 'logs'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
