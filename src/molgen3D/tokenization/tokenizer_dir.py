"""Write a tokenizer directory so that it is either absent, the old one, or complete.

Files go into a hidden sibling directory that is renamed into place at the end, and a marker
listing every file's sha256 is written last. A killed build therefore never leaves a
directory that looks complete, and a rebuild with identical content touches nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from molgen3D.files import sha256_file

MARKER = "molgen3d_tokenizer.json"


@dataclass(frozen=True)
class TokenizerFiles:
    """The content of one tokenizer directory, built in memory."""

    files: dict[str, bytes]
    """File name -> bytes."""
    vocab_size: int
    """Number of token ids, added tokens included."""
    source: str
    """Where the content came from, for the marker."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_marker(directory: Path) -> dict | None:
    """The marker of a completed build, or None (absent or unreadable)."""
    try:
        marker = json.loads((Path(directory) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), dict) else None


def matches(directory: Path, content: TokenizerFiles) -> bool:
    """True when `directory` is a completed build holding exactly `content`'s files."""
    marker = read_marker(directory)
    expected = {name: _sha256(data) for name, data in content.files.items()}
    if marker is None or marker["files"] != expected:
        return False
    return all(
        (Path(directory) / name).is_file() and sha256_file(Path(directory) / name) == digest
        for name, digest in expected.items()
    )


def write_tokenizer_dir(directory: Path, content: TokenizerFiles, name: str) -> bool:
    """Make `directory` hold `content`; False when it already did (nothing written).

    Replaces an older build of ours; refuses to replace a directory without our marker
    (it may be someone's own snapshot).
    """
    directory = Path(directory)
    if matches(directory, content):
        return False
    if directory.exists() and read_marker(directory) is None and any(directory.iterdir()):
        raise FileExistsError(
            f"{directory} exists but was not written by `molgen3d build-tokenizer` (no {MARKER}); "
            f"move it away or build into another --out-root"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=directory.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the finished directory is an ordinary one
        for file_name, data in content.files.items():
            (staging / file_name).write_bytes(data)
        marker = {
            "name": name,
            "vocab_size": content.vocab_size,
            "source": content.source,
            "files": {file_name: _sha256(data) for file_name, data in content.files.items()},
        }
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _swap_in(staging, directory, content)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def _swap_in(staging: Path, directory: Path, content: TokenizerFiles) -> None:
    retired = None
    if directory.exists():
        retired = directory.with_name(f".{directory.name}.old-{uuid.uuid4().hex[:8]}")
        directory.rename(retired)
    try:
        staging.rename(directory)
    except OSError:
        # Another process finished the same build first: fine if it wrote what we would have.
        if not matches(directory, content):
            if retired is not None and not directory.exists():
                retired.rename(directory)
            raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
