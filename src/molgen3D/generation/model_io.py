"""Loading a model to sample from: an HF folder, an alias, or a training step converted once into the cache.

Also where it runs: `--device auto|cpu|cuda[:N]`, bf16 weights on CUDA and float32 on CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from molgen3D.files import cache_root, sha256_file
from molgen3D.hf.checkpoint_step import MANIFEST, StepNotIntactError, is_saved_step, require_intact


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
"""What `export-hf` copies from the tokenizer directory and sampling cannot do without."""


class ModelLoadError(ValueError):
    """The --model path or alias is not a loadable model; the message says what to run."""


def exported_step(step_dir: Path) -> Path:
    """The HF folder of a training step, converted once into the cache and reused while the step is unchanged.

    Every call first checks the step (`require_intact`: its files still match its checksums.json) and
    refuses one that fails, naming the file; the cache key is the step's absolute path and the sha256
    of that manifest (of every file, for a step without one: unverified, warned), so a re-saved step
    is converted again and one changed in place is never served from an earlier conversion, whatever
    its timestamps. The conversion is written next to the key and renamed into place, so an
    interrupted one never looks finished.
    """
    step_dir = step_dir.resolve()
    try:
        check = require_intact(step_dir, warn=lambda message: print(f"warning: {message}", file=sys.stderr))
    except StepNotIntactError as err:
        raise ModelLoadError(str(err)) from None
    if check.verified:
        content: object = sha256_file(step_dir / MANIFEST)
    else:
        content = [
            (p.relative_to(step_dir).as_posix(), sha256_file(p)) for p in sorted(step_dir.rglob("*")) if p.is_file()
        ]
    key = hashlib.sha256(json.dumps([str(step_dir), content]).encode()).hexdigest()[:16]
    target = cache_root() / "exports" / f"{step_dir.parent.parent.name}-{step_dir.name}-{key}"
    if (target / "config.json").is_file():
        return target
    from molgen3D.hf.export import export_step

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        print(f"{step_dir} is a training checkpoint step: converting it once into {target}", file=sys.stderr)
        export_step(step_dir, partial, overwrite=True)
        partial.rename(target)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return target


def resolve_device(device: str):
    """`auto` -> the first CUDA device when there is one, else CPU; `cuda` without a GPU is an error."""
    import torch

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device here; use --device cpu (or auto)")
    return torch.device(device)


def model_dtype(device, dtype: str = "auto"):
    """bf16 on CUDA (what the model trained in), float32 on CPU (bf16 matmuls are slow on most CPUs)."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def model_directory(model: str | Path) -> Path:
    """The HF folder behind --model: the folder itself, an alias to it, or the cached conversion of a training step."""
    from molgen3D.config.paths import resolve_path

    directory = resolve_path(str(model), default_section="models")
    if not directory.is_dir():
        raise ModelLoadError(f"--model {model!r} resolves to {directory}, which is not a directory")
    if (directory / "config.json").is_file():
        if is_saved_step(directory):  # an HF-format training step: used only while its checksums match
            try:
                require_intact(directory, warn=lambda message: print(f"warning: {message}", file=sys.stderr))
            except StepNotIntactError as err:
                raise ModelLoadError(str(err)) from None
        return directory
    if not (directory / ".metadata").is_file() and not any(directory.glob("*.safetensors")):
        raise ModelLoadError(
            f"{directory} has no config.json (not a Hugging Face folder) and is not a saved training step; "
            "pass the folder written by `molgen3d export-hf`"
        )
    return exported_step(directory)


def tokenizer_source(directory: Path, tokenizer: str | Path | None) -> str | Path:
    """The tokenizer to load: `--tokenizer` when given, else the model folder, which must hold the tokenizer files."""
    if tokenizer is not None:
        return tokenizer
    missing = [name for name in TOKENIZER_FILES if not (Path(directory) / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"{directory} has no {' and no '.join(missing)}: the model folder lacks its tokenizer files; "
            "export it again with `molgen3d export-hf`, or pass the tokenizer it was trained with (--tokenizer DIR)"
        )
    return directory


def load_model(model: str | Path, tokenizer: str | Path | None = None, *, device: str = "cpu", dtype: str = "auto"):
    """(model in eval mode on `device`, tokenizer, HF folder it was read from)."""
    from transformers import AutoModelForCausalLM

    from molgen3D.tokenization.load import load_tokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory = model_directory(model)
    source = tokenizer_source(directory, tokenizer)
    target = resolve_device(device)
    lm = (
        AutoModelForCausalLM.from_pretrained(str(directory), dtype=model_dtype(target, dtype), local_files_only=True)
        .to(target)
        .eval()
    )
    tok = load_tokenizer(source)
    if lm.config.vocab_size < len(tok):
        raise ModelLoadError(
            f"{directory}: the model has {lm.config.vocab_size} embedding rows "
            f"but the tokenizer has {len(tok)} tokens; "
            "pair the model with the tokenizer it was trained with (--tokenizer)"
        )
    return lm, tok, directory


def model_context(model) -> int | None:
    """The longest sequence the model was trained for (`max_position_embeddings` of the exported config)."""
    return getattr(model.config, "max_position_embeddings", None)
