"""`hf:` values through huggingface_hub, without a network: a cache folder built in the real layout,
a stubbed download, and offline errors that name the repository, the revision and the command."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import huggingface_hub
import pytest

from molgen3D.config import hub, paths

COMMIT = "da87bfb608c14b7cf20ba1ce41287e8de496c0cd"
OTHER = "0123456789abcdef0123456789abcdef01234567"


def populate(cache: Path, repo: str, commit: str, branch: str | None = "main", files=("config.json",)) -> Path:
    """The hub cache layout: models--ORG--NAME/{refs/<branch>, snapshots/<commit>/<files>}."""
    storage = cache / ("models--" + repo.replace("/", "--"))
    snap = storage / "snapshots" / commit
    snap.mkdir(parents=True)
    for name in files:
        (snap / name).write_text("{}")
    if branch:
        (storage / "refs").mkdir()
        (storage / "refs" / branch).write_text(commit)
    return snap


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    root = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(root))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return root / "hub"


@pytest.fixture()
def downloads(monkeypatch):
    """Stub the network: a real local-only lookup, a fake download that writes the cache layout."""
    real = huggingface_hub.snapshot_download
    calls: list[dict] = []

    def fake(repo_id, *, revision=None, cache_dir=None, local_files_only=False, allow_patterns=None, **kw):
        if local_files_only:
            return real(
                repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True, allow_patterns=allow_patterns
            )
        calls.append({"repo_id": repo_id, "revision": revision, "allow_patterns": allow_patterns})
        time.sleep(0.2)  # long enough for waiting processes to pile up on the lock
        commit = revision if hub.COMMIT.fullmatch(revision) else OTHER
        return str(populate(Path(cache_dir), repo_id, commit, branch=None if commit == revision else revision))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return calls


def test_parse_and_commands():
    ref = hub.parse_hub(f"Qwen/Qwen3-0.6B-Base@{COMMIT}")
    assert ref == hub.HubRef("Qwen/Qwen3-0.6B-Base", COMMIT) and ref.pinned
    assert ref.download_command() == f"hf download Qwen/Qwen3-0.6B-Base --revision {COMMIT}"
    assert f"snapshot_download('Qwen/Qwen3-0.6B-Base', revision='{COMMIT}')" in ref.python_command()
    assert not hub.parse_hub("Org/Name").pinned and hub.parse_hub("Org/Name").revision == "main"
    with pytest.raises(ValueError, match="not a hub repository id"):
        hub.parse_hub("a/b/c@main")


def test_cache_location_follows_the_environment(tmp_path):
    assert hub.hub_cache({"HF_HOME": "/x"}) == Path("/x/hub")
    assert hub.hub_cache({"HF_HOME": "/x", "HF_HUB_CACHE": "/y"}) == Path("/y")
    assert hub.hub_cache({"XDG_CACHE_HOME": "/z"}) == Path("/z/huggingface/hub")
    assert hub.offline({"HF_HUB_OFFLINE": "1"}) and hub.offline({"TRANSFORMERS_OFFLINE": "yes"})
    assert not hub.offline({"HF_HUB_OFFLINE": "0"})


def test_a_prepopulated_cache_resolves_without_download(cache, downloads, monkeypatch):
    snap = populate(cache, "Qwen/Qwen3-0.6B-Base", COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert paths.resolve(f"hf:Qwen/Qwen3-0.6B-Base@{COMMIT}") == str(snap)
    assert paths.resolve("hf:Qwen/Qwen3-0.6B-Base@main") == str(snap)  # the branch through refs/main
    assert paths.resolve("hf:Qwen/Qwen3-0.6B-Base") == str(snap)
    assert downloads == []


def test_the_shipped_alias_resolves_from_the_cache(cache, downloads, monkeypatch):
    monkeypatch.delenv(paths.PATHS_ENV, raising=False)
    ref = paths.hub_ref("base_paths:qwen3_0.6b_base_model")
    assert ref.repo_id == "Qwen/Qwen3-0.6B-Base" and ref.pinned, "paths.yaml pins a commit"
    snap = populate(cache, ref.repo_id, ref.revision, branch=None, files=("config.json", "model.safetensors"))
    assert paths.resolve("models:qwen3_0.6b_base") == str(snap)
    assert paths.resolve("models:qwen3_0.6b_base/config.json") == str(snap / "config.json")
    assert downloads == []


def test_the_stubbed_download_runs_once_for_many_processes(cache, downloads):
    """Ranks resolve concurrently: one downloads under the lock, the others then read the cache."""
    results: list[str] = []
    errors: list[BaseException] = []

    def rank():
        try:
            results.append(paths.resolve(f"hf:Org/Model@{COMMIT}"))
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=rank) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(downloads) == 1, (errors, downloads)
    assert downloads[0] == {"repo_id": "Org/Model", "revision": COMMIT, "allow_patterns": None}
    expected = str(cache / "models--Org--Model" / "snapshots" / COMMIT)
    assert results == [expected] * 4
    assert paths.resolve(f"hf:Org/Model@{COMMIT}") == expected and len(downloads) == 1  # cached now


def test_tokenizer_aliases_fetch_only_tokenizer_files(cache, downloads, tmp_path, monkeypatch):
    f = tmp_path / "paths.yaml"
    f.write_text("tokenizers:\n  origin: hf:Org/Tok@main\nmodels:\n  base: hf:Org/Tok@main\n")
    monkeypatch.setenv(paths.PATHS_ENV, str(f))
    got = Path(paths.resolve("tokenizers:origin"))
    assert got.parent.name == "snapshots" and (got / "config.json").is_file()
    assert downloads[0]["allow_patterns"] == list(hub.TOKENIZER_PATTERNS)
    assert paths.hub_ref("tokenizers:origin").allow_patterns == hub.TOKENIZER_PATTERNS
    assert paths.hub_ref("models:base").allow_patterns is None


def test_offline_and_missing_names_repository_revision_and_command(cache, downloads, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = hub.parse_hub(f"Qwen/Qwen3-0.6B-Base@{COMMIT}")
    with pytest.raises(hub.HubUnavailableError) as err:
        hub.fetch(ref)
    text = str(err.value)
    assert "Qwen/Qwen3-0.6B-Base" in text and COMMIT in text and "HF_HUB_OFFLINE" in text
    assert f"hf download Qwen/Qwen3-0.6B-Base --revision {COMMIT}" in text and "snapshot_download(" in text
    # Through an alias at config load: no error yet, the folder it would have, remembered as missing.
    where = paths.resolve(f"hf:Qwen/Qwen3-0.6B-Base@{COMMIT}")
    assert where == str(cache / "models--Qwen--Qwen3-0.6B-Base" / "snapshots" / COMMIT)
    later = hub.unavailable(where)
    assert later is not None and later.ref == ref and ref.download_command() in str(later)
    assert hub.unavailable(Path(where) / "config.json") is not None
    assert hub.unavailable("/some/local/folder") is None and downloads == []


def test_lookups_only_never_downloads(cache, downloads):
    with hub.lookups_only():
        where = paths.resolve("hf:Org/Model@main")
    assert downloads == [] and hub.unavailable(where).reason == "not downloaded yet"


def test_a_failed_download_names_the_command(cache, monkeypatch):
    def broken(repo_id, *, local_files_only=False, **kw):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        raise huggingface_hub.errors.LocalEntryNotFoundError("connection refused")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", broken)
    with pytest.raises(hub.HubUnavailableError, match="connection refused.*hf download Org/Model --revision main"):
        paths.resolve("hf:Org/Model")
