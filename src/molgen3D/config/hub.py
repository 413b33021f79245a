"""`hf:<repo>@<revision>` values: Hugging Face hub snapshots in the user's cache, pinned by revision.

A `paths.yaml` value (or any path setting) written `hf:Qwen/Qwen3-0.6B-Base@<commit>` names a hub
repository at a revision; `snapshot(ref)` turns it into the local snapshot folder of the user's
Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`):
- already cached: that folder (found with `snapshot_download(..., local_files_only=True)`);
- not cached and downloads allowed: downloaded once. Every rank of a launch resolves its config
  before the process group exists, so ranks are ordered by a file lock in the cache, not by a
  collective: the first process to take it downloads, every other one waits on the lock and then
  finds the snapshot in the cache (one download per cache; per node when caches are node-local);
- offline (`HF_HUB_OFFLINE=1`) or inside `lookups_only()` (the doctor): nothing is fetched; the
  folder the snapshot would have is returned and remembered, so whoever needs its files reports
  `unavailable(path)`: the repository, the revision and the command that pre-downloads it.
An unpinned revision (a branch such as `main`) works, but the doctor warns: the files can change.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

COMMIT = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_REVISION = "main"
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# What a tokenizer needs from a model repository (the weights are left out).
TOKENIZER_PATTERNS = ("*.json", "*.txt", "*.model", "*.tiktoken")


@dataclass(frozen=True)
class HubRef:
    """A hub model repository at a revision (a 40-hex commit when pinned)."""

    repo_id: str
    revision: str = DEFAULT_REVISION
    allow_patterns: tuple[str, ...] | None = None
    """Only these files (tokenizers); None: the whole snapshot."""

    @property
    def pinned(self) -> bool:
        return bool(COMMIT.fullmatch(self.revision))

    @property
    def folder(self) -> str:
        """The cache folder name huggingface_hub gives the repository."""
        return "models--" + self.repo_id.replace("/", "--")

    def download_command(self) -> str:
        include = "".join(f" --include '{p}'" for p in self.allow_patterns or ())
        return f"hf download {self.repo_id} --revision {self.revision}{include}"

    def python_command(self) -> str:
        patterns = f", allow_patterns={list(self.allow_patterns)!r}" if self.allow_patterns else ""
        return (
            'python -c "from huggingface_hub import snapshot_download; '
            f"snapshot_download('{self.repo_id}', revision='{self.revision}'{patterns})\""
        )

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}"


class HubUnavailableError(FileNotFoundError):
    """A hub snapshot is not in the cache and cannot be fetched; names the repository, revision and command."""

    def __init__(self, ref: HubRef, reason: str, cache: Path | None = None) -> None:
        self.ref, self.reason = ref, reason
        where = f" into {cache}" if cache else ""
        self.problem = (
            f"Hugging Face repository {ref.repo_id} at revision {ref.revision} is not in the cache ({reason})"
        )
        self.fix = (
            f"pre-download it{where} on a machine with network access, with `{ref.download_command()}` or "
            f"`{ref.python_command()}` (same HF_HOME / HF_HUB_CACHE as the run), or unset HF_HUB_OFFLINE"
        )
        super().__init__(f"{self.problem}. Fix: {self.fix}")


def parse_hub(text: str, allow_patterns: tuple[str, ...] | None = None) -> HubRef:
    """`Org/Name@rev` (the part after `hf:`) -> HubRef; no `@rev` means `main` (unpinned)."""
    repo, _, revision = text.strip().partition("@")
    if not repo or repo.count("/") > 1 or repo.startswith("/") or repo.endswith("/") or " " in repo:
        raise ValueError(f"hf:{text} is not a hub repository id; write hf:<org>/<name>@<revision>")
    return HubRef(repo, revision or DEFAULT_REVISION, allow_patterns)


def offline(env: Mapping[str, str] | None = None) -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, but at call time."""
    env = os.environ if env is None else env
    return any(env.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE") for name in OFFLINE_ENVS)


def hub_cache(env: Mapping[str, str] | None = None) -> Path:
    """The user's hub cache, by huggingface_hub's own rule (read at call time)."""
    env = os.environ if env is None else env
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(os.path.expandvars(env[name])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


_downloads_allowed: ContextVar[bool] = ContextVar("molgen3d_hub_downloads", default=True)
_missing: dict[str, tuple[HubRef, str, Path]] = {}


@contextlib.contextmanager
def lookups_only() -> Iterator[None]:
    """Within this block `snapshot` never downloads (the doctor answers in seconds)."""
    token = _downloads_allowed.set(False)
    try:
        yield
    finally:
        _downloads_allowed.reset(token)


def cached_snapshot(ref: HubRef, cache: Path | None = None) -> Path | None:
    """The complete cached snapshot folder of `ref`, or None (no network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = list(ref.allow_patterns) if ref.allow_patterns else None
    try:
        found = snapshot_download(
            ref.repo_id,
            revision=ref.revision,
            cache_dir=str(cache or hub_cache()),
            local_files_only=True,
            allow_patterns=patterns,
        )
    except LocalEntryNotFoundError:
        return None
    return Path(found)


def expected_snapshot(ref: HubRef, cache: Path | None = None) -> Path:
    """Where the snapshot will be once downloaded (exact for a pinned commit)."""
    return (cache or hub_cache()) / ref.folder / "snapshots" / ref.revision


def fetch(ref: HubRef, cache: Path | None = None) -> Path:
    """Cached snapshot, else download it under a file lock in the cache; `HubUnavailableError` offline."""
    cache = cache or hub_cache()
    found = cached_snapshot(ref, cache)
    if found is not None:
        return found
    if offline():
        raise HubUnavailableError(ref, "HF_HUB_OFFLINE is set", cache)
    from filelock import FileLock
    from huggingface_hub import snapshot_download

    lock = cache / ".locks" / f"molgen3d-{ref.folder}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        found = cached_snapshot(ref, cache)  # another process downloaded it while this one waited
        if found is not None:
            return found
        try:
            path = snapshot_download(
                ref.repo_id,
                revision=ref.revision,
                cache_dir=str(cache),
                allow_patterns=list(ref.allow_patterns) if ref.allow_patterns else None,
            )
        except OSError as exc:  # connection problems, unknown repository/revision, gated repositories
            raise HubUnavailableError(ref, f"the download failed: {type(exc).__name__}: {exc}", cache) from exc
    return Path(path)


def snapshot(ref: HubRef, cache: Path | None = None) -> Path:
    """The local folder of `ref`: cached or downloaded; offline (or in `lookups_only`) the folder it would have."""
    cache = cache or hub_cache()
    if offline() or not _downloads_allowed.get():
        found = cached_snapshot(ref, cache)
        if found is not None:
            return found
        path = expected_snapshot(ref, cache)
        reason = "HF_HUB_OFFLINE is set" if offline() else "not downloaded yet"
        _missing[str(path)] = (ref, reason, cache)
        return path
    return fetch(ref, cache)


def unavailable(path: str | os.PathLike) -> HubUnavailableError | None:
    """The error for a folder `snapshot` handed out without its files (None for any other path)."""
    path = Path(path)
    if path.exists():
        return None
    entry = next((_missing[str(p)] for p in (path, *path.parents) if str(p) in _missing), None)
    return None if entry is None else HubUnavailableError(*entry)
