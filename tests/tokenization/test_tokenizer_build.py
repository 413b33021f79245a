"""build_all / build-tokenizer: complete directories, idempotent, never a half directory that looks complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from molgen3D.tokenization import build
from molgen3D.tokenization.build import BuildTokenizerConfig, build_all, build_compact_tokenizer, run
from molgen3D.tokenization.load import load_tokenizer
from molgen3D.tokenization.tokenizer_dir import MARKER, TokenizerFiles, matches, write_tokenizer_dir

NAMES = {
    "qwen3_0.6b_origin",
    "qwen3_0.6b_custom",
    "qwen3_0.6b_local",
    "molgen_compact",
    "molgen_compact_pairs",
    "molgen_compact_digits",
    "molgen_cpu",
}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Inode and mtime of every entry: any rewrite or replacement changes one of them."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_build_all_writes_complete_dirs_then_leaves_them_alone(tokenizer_root):
    assert {p.name for p in tokenizer_root.iterdir()} == NAMES, "no leftover staging directories"
    for name in NAMES:
        marker = json.loads((tokenizer_root / name / MARKER).read_text())
        assert marker["name"] == name and set(marker["files"]) >= {"tokenizer.json", "tokenizer_config.json"}
    before = _snapshot(tokenizer_root)
    assert build_all(tokenizer_root) == {name: tokenizer_root / name for name in NAMES}
    assert _snapshot(tokenizer_root) == before


def test_a_damaged_build_is_rebuilt(tmp_path):
    directory = build_compact_tokenizer(tmp_path / "molgen_compact")
    config = directory / "tokenizer_config.json"
    good = config.read_bytes()
    config.write_text("{}")
    build_compact_tokenizer(directory)
    assert config.read_bytes() == good
    (directory / "tokenizer.json").unlink()
    build_compact_tokenizer(directory)
    assert load_tokenizer(directory).decode([0]) == "<|endoftext|>"


def test_a_killed_build_leaves_no_complete_looking_dir(tmp_path, monkeypatch):
    content = TokenizerFiles({"a.json": b"1", "b.json": b"2"}, 2, "test")
    target = tmp_path / "tok"
    real_write = Path.write_bytes

    def die_on_second_file(self, data):
        if self.name == "b.json":
            raise KeyboardInterrupt("killed")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", die_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        write_tokenizer_dir(target, content, "tok")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert write_tokenizer_dir(target, content, "tok") and matches(target, content)
    assert not write_tokenizer_dir(target, content, "tok")


def test_staging_left_by_a_hard_kill_is_not_complete(tmp_path):
    """What SIGKILL leaves: files without the marker, under the staging name, never under the final name."""
    content = TokenizerFiles({"a.json": b"1"}, 1, "test")
    half = tmp_path / "tok"
    half.mkdir()
    (half / "a.json").write_bytes(b"1")
    assert not matches(half, content)
    with pytest.raises(FileExistsError, match="not written by `molgen3d build-tokenizer`"):
        write_tokenizer_dir(half, content, "tok")


def test_cli_builds_only_what_is_asked(tmp_path, capsys):
    assert build.cli(["--out-root", str(tmp_path), "--only", "compact"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "molgen_compact",
        "molgen_compact_digits",
        "molgen_compact_pairs",
        "molgen_cpu",
    ]
    vocab = json.loads((tmp_path / "molgen_compact" / MARKER).read_text())["vocab_size"]
    assert "molgen_compact" in out and f"{vocab:,}" in out
    assert build.cli(["--out-root", str(tmp_path), "--only", "compact", "--source", "x"]) == 1
    assert "--source" in capsys.readouterr().err


def test_default_out_root_is_the_tokenizers_root_alias(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLGEN3D_ROOT", str(tmp_path))
    built = run(BuildTokenizerConfig(only="compact"))
    assert built["molgen_compact"] == tmp_path / "artifacts" / "tokenizers" / "molgen_compact"
    assert load_tokenizer("tokenizers:molgen_compact").eos_token == "<|endoftext|>"


def test_cpu_default_tokenizer_records_its_format(tokenizer_root):
    from molgen3D.chem.coordinate_format import read_format
    from molgen3D.tokenization.build import CPU_DEFAULT, CPU_DEFAULT_FORMAT

    assert read_format(tokenizer_root / CPU_DEFAULT) == CPU_DEFAULT_FORMAT
    assert read_format(tokenizer_root / "molgen_compact") is None
    marker = json.loads((tokenizer_root / CPU_DEFAULT / MARKER).read_text())
    assert "coordinate_format.json" in marker["files"] and CPU_DEFAULT_FORMAT.name in marker["source"]
    assert load_tokenizer(tokenizer_root / CPU_DEFAULT).eos_token == "<|endoftext|>"


def test_qwen_local_is_custom_plus_its_recorded_format(tokenizer_root, tmp_path):
    """The GPU option keeps Qwen3's vocabulary (hf_pretrain works) and refuses data of another format."""
    from molgen3D.chem.coordinate_format import (
        FormatMismatchError,
        check_data_format,
        read_format,
    )
    from molgen3D.tokenization.build import CUSTOM, QWEN_LOCAL, QWEN_LOCAL_FORMAT

    local, custom = tokenizer_root / QWEN_LOCAL, tokenizer_root / CUSTOM
    assert (local / "tokenizer.json").read_bytes() == (custom / "tokenizer.json").read_bytes()
    assert read_format(local) == QWEN_LOCAL_FORMAT and read_format(custom) is None
    assert QWEN_LOCAL_FORMAT.positions == "local"
    assert len(load_tokenizer(local)) == len(load_tokenizer(custom))
    data = tmp_path / "data"
    data.mkdir()
    manifest = data / "manifest.json"
    manifest.write_text(json.dumps({"coordinate_format": QWEN_LOCAL_FORMAT.to_dict()}))
    check_data_format(data, local)
    with pytest.raises(FormatMismatchError, match="records no coordinate format"):
        check_data_format(data, custom)
    manifest.write_text(json.dumps({"settings": {"precision": 4}}))
    with pytest.raises(FormatMismatchError, match=f"{QWEN_LOCAL_FORMAT.name} but data"):
        check_data_format(data, local)
