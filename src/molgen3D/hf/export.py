"""TorchTitan checkpoints -> complete Hugging Face model folders (`molgen3d export-hf`).

TorchTitan's HF save writes only safetensors; transformers also needs `config.json`,
`generation_config.json` and the tokenizer files. `complete_hf_folder` adds them;
`export_step` turns any saved DCP step (or an HF-format step) into such a folder, on CPU,
without a process group, reading the model shape and tokenizer from the run's `run_meta.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from molgen3D.chem.tagged_text import CONFORMER_CLOSE
from molgen3D.hf.checkpoint_step import StepNotIntactError, require_intact
from molgen3D.hf.training_elements import record_training_elements
from molgen3D.tokenization.load import load_titan_tokenizer

logger = logging.getLogger(__name__)

RUN_META = "run_meta.json"
"""Written into the run dir by the pretraining runner at start: the model args and tokenizer export needs."""

# Files of a model folder that a tokenizer directory must never overwrite.
_MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors.index.json"}
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
_EXPORT_DTYPES = ("float32", "bfloat16", "float16")


class HFExportError(ValueError):
    """A checkpoint or run folder cannot be exported; the message names the path and the fix."""


def _args_dict(model_args: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(model_args) and not isinstance(model_args, type):
        return dataclasses.asdict(model_args)
    if isinstance(model_args, Mapping):
        return dict(model_args)
    raise TypeError(f"model_args must be a model-args dataclass or a mapping, got {type(model_args).__name__}")


def qwen3_model_args(model_args: Any):
    """TorchTitan `Qwen3ModelArgs` from a dataclass or a `run_meta.json` dict (unknown keys ignored)."""
    from torchtitan.models.moe import MoEArgs
    from torchtitan.models.qwen3.model.args import Qwen3ModelArgs

    values = _args_dict(model_args)
    names = {f.name for f in dataclasses.fields(Qwen3ModelArgs)}
    kwargs = {k: v for k, v in values.items() if k in names}
    if isinstance(kwargs.get("moe_args"), Mapping):
        moe_names = {f.name for f in dataclasses.fields(MoEArgs)}
        kwargs["moe_args"] = MoEArgs(**{k: v for k, v in kwargs["moe_args"].items() if k in moe_names})
    return Qwen3ModelArgs(**kwargs)


def _special_ids(tokenizer_dir: Path) -> tuple[int, int | None, int]:
    """(<|endoftext|> id, [/CONFORMER] id or None, tokenizer size incl. added tokens)."""
    try:
        tok = load_titan_tokenizer(tokenizer_dir)
    except (FileNotFoundError, ValueError) as err:
        raise HFExportError(f"{tokenizer_dir}: {err}") from None
    return tok.eos_id, tok.token_to_id(CONFORMER_CLOSE), tok.tokenizer.get_vocab_size(with_added_tokens=True)


def _safetensors_dtype(hf_dir: Path) -> str:
    from safetensors import safe_open

    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise HFExportError(f"{hf_dir}: no *.safetensors files; complete_hf_folder needs a folder of HF weights")
    with safe_open(str(files[0]), framework="pt") as f:
        keys = list(f.keys())
        if not keys:
            raise HFExportError(f"{files[0]}: holds no tensors")
        code = f.get_slice(keys[0]).get_dtype()
    if code not in _SAFETENSORS_DTYPES:
        raise HFExportError(f"{files[0]}: unsupported weight dtype {code}")
    return _SAFETENSORS_DTYPES[code]


def hf_config(model_args: Any, *, eot_id: int, torch_dtype: str) -> dict[str, Any]:
    """config.json of a transformers Qwen3ForCausalLM with the shape of `model_args`.

    Written in the format of the published Qwen3 configs (`rope_theta`, `torch_dtype`), which
    transformers 4.x and 5.x both read.
    """
    a = _args_dict(model_args)
    if a.get("moe_enabled"):
        raise HFExportError("MoE Qwen3 models are not exported: Qwen3ForCausalLM is the dense architecture")
    if not a.get("qk_norm", True):
        raise HFExportError("model_args.qk_norm is False, but Qwen3ForCausalLM always applies q/k RMSNorm")
    if a.get("attn_mask_type", "causal") != "causal":
        logger.warning(
            "model_args.attn_mask_type=%r: transformers attends across documents, so logits on packed "
            "multi-document inputs differ from training",
            a["attn_mask_type"],
        )
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": int(a["vocab_size"]),
        "hidden_size": int(a["dim"]),
        "intermediate_size": int(a["hidden_dim"]),
        "num_hidden_layers": int(a["n_layers"]),
        "num_attention_heads": int(a["n_heads"]),
        "num_key_value_heads": int(a["n_kv_heads"] or a["n_heads"]),
        "head_dim": int(a["head_dim"]),
        "hidden_act": "silu",
        "rms_norm_eps": float(a["norm_eps"]),
        "rope_theta": float(a["rope_theta"]),
        "rope_scaling": None,
        "max_position_embeddings": int(a["max_seq_len"]),
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": int(a["n_layers"]),
        "initializer_range": 0.02,
        "tie_word_embeddings": bool(a.get("enable_weight_tying", True)),
        "use_cache": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "pad_token_id": eot_id,
        "torch_dtype": torch_dtype,
    }


def generation_config(*, eot_id: int, conformer_end_id: int | None, max_new_tokens: int) -> dict[str, Any]:
    """Defaults of the GEOM sampling protocol: temperature 1, no top-k/top-p cut, stop at [/CONFORMER] or EOT."""
    eos = eot_id if conformer_end_id is None else [eot_id, conformer_end_id]
    return {
        "bos_token_id": eot_id,
        "eos_token_id": eos,
        "pad_token_id": eot_id,
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "max_new_tokens": int(max_new_tokens),
    }


def complete_hf_folder(hf_dir: str | Path, model_args: Any, tokenizer_dir: str | Path) -> Path:
    """Add config.json, generation_config.json and the tokenizer files to a folder of HF safetensors."""
    hf_dir = Path(hf_dir)
    tokenizer_dir = Path(tokenizer_dir)
    a = _args_dict(model_args)
    eot, conformer_end, tok_size = _special_ids(tokenizer_dir)
    if tok_size > int(a["vocab_size"]):
        raise HFExportError(
            f"tokenizer {tokenizer_dir} has {tok_size} tokens but the model's vocab_size is {a['vocab_size']}: "
            "this tokenizer does not belong to this model"
        )
    config = hf_config(a, eot_id=eot, torch_dtype=_safetensors_dtype(hf_dir))
    gen = generation_config(eot_id=eot, conformer_end_id=conformer_end, max_new_tokens=int(a["max_seq_len"]))
    for name in sorted(p.name for p in tokenizer_dir.iterdir() if p.is_file()):
        if name in _MODEL_FILES or name.endswith((".safetensors", ".bin", ".pt")):
            continue
        shutil.copy2(tokenizer_dir / name, hf_dir / name)
    (hf_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (hf_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")
    return hf_dir


def read_run_meta(step_dir: Path) -> dict[str, Any]:
    """The run's `run_meta.json` (written by the runner at start), checked for the fields export needs.

    It lives in the run dir: `<step dir>/../../` for `<run dir>/checkpoint/step-N`, one level
    higher for the HF copy `step-N/hf` that `save_hf_per_checkpoint` writes.
    """
    candidates = [step_dir.parents[i] / RUN_META for i in (1, 2) if len(step_dir.parents) > i]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise HFExportError(
            f"{candidates[0] if candidates else step_dir / RUN_META} not found: export-hf expects a step dir "
            "<run dir>/checkpoint/step-N of a run started by `molgen3d pretrain`, whose runner writes "
            "run_meta.json into the run dir"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HFExportError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    missing = [k for k in ("model_args", "tokenizer_dir") if k not in meta]
    if missing:
        raise HFExportError(f"{path}: missing keys {missing}")
    return meta


def _load_dcp_model(step_dir: Path, args) -> dict[str, Any]:
    """Model tensors of a TorchTitan DCP step (top-level FQNs), read on CPU in this process only."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    from torchtitan.models.qwen3.model.model import Qwen3Model

    with torch.device("meta"):
        model = Qwen3Model(args)
    # The tied head is the embedding: it is not read (and may be absent from the checkpoint).
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wanted = [k for k in shapes if not (args.enable_weight_tying and k == "output.weight")]
    reader = dcp.FileSystemReader(str(step_dir))
    stored = reader.read_metadata().state_dict_metadata
    missing = [k for k in wanted if not isinstance(stored.get(k), TensorStorageMetadata)]
    if missing:
        raise HFExportError(
            f"{step_dir}: checkpoint lacks model tensors {missing[:5]}{' ...' if len(missing) > 5 else ''} "
            f"expected for this run's model args (is run_meta.json from the same run?)"
        )
    state = {}
    for key in wanted:
        meta = stored[key]
        if tuple(meta.size) != shapes[key]:
            raise HFExportError(f"{step_dir}: {key} has shape {tuple(meta.size)}, model args say {shapes[key]}")
        state[key] = torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
        dcp.load(state, storage_reader=reader, no_dist=True)
    return state


def export_step(
    step_dir: str | Path,
    out_dir: str | Path,
    *,
    dtype: Literal["float32", "bfloat16", "float16"] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a complete HF model folder for a saved step (`<run dir>/checkpoint/step-N`, DCP or HF format).

    `step_dir` may be a `ckpts:...` alias. `dtype` None keeps the stored dtype.
    """
    import torch
    from safetensors.torch import save_file

    from molgen3D.config.paths import resolve_path
    from molgen3D.hf.state_dict_adapter import MolGenQwen3StateDictAdapter

    step_dir = resolve_path(step_dir).resolve()
    out_dir = Path(out_dir)
    if not step_dir.is_dir():
        raise HFExportError(f"{step_dir}: checkpoint step dir not found")
    if dtype is not None and dtype not in _EXPORT_DTYPES:
        raise HFExportError(f"dtype {dtype!r} not one of {_EXPORT_DTYPES}")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise HFExportError(f"{out_dir} exists and is not empty; choose a new --out or pass --overwrite")
    is_dcp = (step_dir / ".metadata").is_file()
    if not is_dcp and not any(step_dir.glob("*.safetensors")):
        raise HFExportError(f"{step_dir}: neither a DCP checkpoint (.metadata) nor HF safetensors")
    try:
        require_intact(step_dir, warn=logger.warning)
    except StepNotIntactError as err:
        raise HFExportError(str(err)) from None
    if not is_dcp and dtype is not None:
        raise HFExportError(f"{step_dir} is already in HF format: it is copied as stored, without dtype conversion")
    meta = read_run_meta(step_dir)
    args = qwen3_model_args(meta["model_args"])
    tokenizer_dir = Path(meta["tokenizer_dir"])
    begin = time.monotonic()
    if out_dir.is_dir():  # --overwrite: weights of an earlier export must not be loaded beside the new ones
        for stale in [*out_dir.glob("*.safetensors"), out_dir / "model.safetensors.index.json"]:
            stale.unlink(missing_ok=True)

    if is_dcp:
        state = _load_dcp_model(step_dir, args)
        hf_state = MolGenQwen3StateDictAdapter(args, None).to_hf(state)
        if dtype is not None:
            hf_state = {k: v.to(getattr(torch, dtype)) for k, v in hf_state.items()}
        bad = [k for k, v in hf_state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise HFExportError(
                f"{step_dir}: {len(bad)} tensors contain NaN/Inf ({', '.join(bad[:5])}); no HF folder is written. "
                "Export an earlier step (the run's loss went non-finite before this save)"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in hf_state.items()},
            str(out_dir / "model.safetensors"),
            metadata={"format": "pt"},
        )
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in step_dir.iterdir():
            if path.suffix == ".safetensors" or path.name == "model.safetensors.index.json":
                shutil.copy2(path, out_dir / path.name)

    complete_hf_folder(out_dir, args, tokenizer_dir)
    record_training_elements(out_dir, meta)
    logger.info("exported %s -> %s in %.1f s", step_dir, out_dir, time.monotonic() - begin)
    return out_dir


@dataclass
class ExportHFConfig:
    """Export a saved TorchTitan step to a Hugging Face model folder."""

    checkpoint: str
    """Step dir `<run dir>/checkpoint/step-N`, or an alias such as `ckpts:cpu_tiny/<run>/checkpoint/step-40`."""
    out: Path
    """Output folder (created; must be empty unless --overwrite)."""
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    """Weight dtype of the export; default keeps the checkpoint's (float32 master weights)."""
    overwrite: bool = False
    """Write into a non-empty --out."""


def cli(argv: list[str]) -> int:
    import tyro

    from molgen3D.config.paths import PathAliasError

    cfg = tyro.cli(ExportHFConfig, args=argv, prog="molgen3d export-hf")
    begin = time.monotonic()
    try:
        out = export_step(cfg.checkpoint, cfg.out, dtype=cfg.dtype, overwrite=cfg.overwrite)
    except (HFExportError, PathAliasError) as exc:
        print(f"molgen3d export-hf: {exc}", file=sys.stderr)
        return 1
    print(f"exported {cfg.checkpoint} -> {out} in {time.monotonic() - begin:.1f} s")
    print(f"load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0
