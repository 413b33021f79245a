"""The runner's input check for `hf:` settings: a snapshot missing from the cache while offline is an error that
names the repository, the revision and the pre-download command; a cached one is used as it is."""

from __future__ import annotations

import pytest

from molgen3D.training.pretraining import torchtitan_runner as runner
from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
from molgen3D.training.pretraining.config.finalize import resolved
from molgen3D.training.pretraining.config.loading import load_job_config

COMMIT = "da87bfb608c14b7cf20ba1ce41287e8de496c0cd"


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def _check(toml, *overrides: str):
    cfg = load_job_config(toml, list(overrides))
    runner.check_inputs(cfg, resolved(cfg).paths)
    return cfg


def test_an_uncached_hub_tokenizer_names_the_download(make_tiny_toml, offline_cache):
    toml = make_tiny_toml("hubtok")
    with pytest.raises(MolGenConfigError) as info:
        _check(toml, "--molgen_run.tokenizer_tag", "hf:Org/Tok@main", "--molgen_data.tokenizer_key", "")
    text = str(info.value)
    assert info.value.key == "molgen_run.tokenizer_tag" and "Org/Tok at revision main" in text
    assert "hf download Org/Tok --revision main" in text


def test_an_uncached_hub_base_model_names_the_download(make_tiny_toml, offline_cache):
    toml = make_tiny_toml(
        "hubbase",
        molgen_run={"init_mode": "hf_pretrain", "base_model_tag": f"hf:Qwen/Qwen3-0.6B-Base@{COMMIT}"},
        checkpoint={"enable": True},
    )
    with pytest.raises(MolGenConfigError) as info:
        _check(toml)
    assert info.value.key == "molgen_run.base_model_tag"
    assert f"hf download Qwen/Qwen3-0.6B-Base --revision {COMMIT}" in str(info.value)
    snap = offline_cache / "models--Qwen--Qwen3-0.6B-Base" / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"")
    cfg = _check(toml)
    assert cfg.checkpoint.initial_load_path == str(snap) and cfg.model.hf_assets_path == str(snap)


def test_only_a_run_that_loads_the_base_model_fetches_it(make_tiny_toml, tmp_path, monkeypatch):
    """A scratch run never loads `base_model_tag`, so resolving its config must not download it (the shipped
    TOML names the 0.6B base); hf_pretrain still resolves it, through the hub."""
    from molgen3D.config import hub

    for name in hub.OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    fetched = []

    def counting_fetch(ref, cache=None):
        fetched.append(ref.repo_id)
        return hub.expected_snapshot(ref, cache)

    monkeypatch.setattr(hub, "fetch", counting_fetch)
    base = {"base_model_tag": f"hf:Org/Never-Cached@{COMMIT}"}
    scratch = load_job_config(make_tiny_toml("scratchbase", molgen_run={"init_mode": "scratch", **base}))
    assert fetched == [], "a scratch run fetched the base model it never loads"
    assert resolved(scratch).paths.base_model is None and scratch.model.hf_assets_path == ""
    toml = make_tiny_toml("hfbase", molgen_run={"init_mode": "hf_pretrain", **base}, checkpoint={"enable": True})
    pretrain = load_job_config(toml)
    assert fetched == ["Org/Never-Cached"]
    assert pretrain.checkpoint.initial_load_path == resolved(pretrain).paths.base_model
