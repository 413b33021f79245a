"""HF export: TorchTitan Qwen3 -> complete HF folder -> transformers gives the same logits."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from molgen3D.hf import export as hf_export
from molgen3D.hf.export import HFExportError, complete_hf_folder, export_step
from molgen3D.hf.state_dict_adapter import MolGenQwen3StateDictAdapter

EOT = "<|endoftext|>"


def _tiny_args(vocab: int):
    from torchtitan.models.qwen3.model.args import Qwen3ModelArgs

    return Qwen3ModelArgs(
        vocab_size=64 * math.ceil(vocab / 64),
        dim=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        hidden_dim=128,
        max_seq_len=64,
        enable_weight_tying=True,
    )


@pytest.fixture(scope="module")
def tokenizer_dir(compact_tokenizer_dir) -> Path:
    return compact_tokenizer_dir


@pytest.fixture(scope="module")
def titan_model(tokenizer_dir):
    """A randomly initialised tiny TorchTitan Qwen3; norm weights perturbed so a swapped norm shows."""
    from tokenizers import Tokenizer
    from torchtitan.models.qwen3.model.model import Qwen3Model

    vocab = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    torch.manual_seed(0)
    model = Qwen3Model(_tiny_args(vocab))
    with torch.no_grad():
        model.init_weights()
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.2 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="module")
def batch(tokenizer_dir, fixture_data) -> torch.Tensor:
    """Two rows of real training text (fixture units), 48 tokens each."""
    from transformers import AutoTokenizer

    from molgen3D.chem.tagged_text import format_unit

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    lines = (fixture_data / "train").glob("*.jsonl")
    records = [json.loads(line) for path in sorted(lines) for line in path.read_text().splitlines()[:2]]
    rows = [tok(format_unit(r["canonical_smiles"], r["embedded_smiles"]))["input_ids"][:48] for r in records[:2]]
    assert all(len(r) == 48 for r in rows)
    return torch.tensor(rows)


def _hf_logits(folder: Path, batch: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied on load
    with torch.no_grad():
        return model(batch).logits


def _titan_logits(model, batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(batch)


def test_export_matches_transformers_logits(titan_model, tokenizer_dir, batch, tmp_path):
    from safetensors.torch import save_file

    hf_state = MolGenQwen3StateDictAdapter(titan_model.model_args, None).to_hf(titan_model.state_dict())
    assert "lm_head.weight" not in hf_state  # tied: Qwen3-0.6B checkpoints carry no head either
    save_file({k: v.contiguous() for k, v in hf_state.items()}, str(tmp_path / "model.safetensors"))
    complete_hf_folder(tmp_path, titan_model.model_args, tokenizer_dir)

    diff = (_hf_logits(tmp_path, batch) - _titan_logits(titan_model, batch)).abs().max().item()
    assert diff <= 1e-4

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    assert config["bos_token_id"] == config["eos_token_id"] == config["pad_token_id"] == 0  # <|endoftext|>
    assert config["torch_dtype"] == "float32"
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    from tokenizers import Tokenizer

    conformer_end = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).token_to_id("[/CONFORMER]")
    assert generation["eos_token_id"] == [0, conformer_end]


def test_export_folder_loads_its_tokenizer(titan_model, tokenizer_dir, tmp_path):
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    hf_state = MolGenQwen3StateDictAdapter(titan_model.model_args, None).to_hf(titan_model.state_dict())
    save_file({k: v.contiguous() for k, v in hf_state.items()}, str(tmp_path / "model.safetensors"))
    complete_hf_folder(tmp_path, titan_model.model_args, tokenizer_dir)
    ours, source = AutoTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tokenizer_dir)
    text = "[SMILES]CCO[/SMILES][CONFORMER][C]<0.1000,-1.2000,0.0000>[/CONFORMER]"
    assert ours(text)["input_ids"] == source(text)["input_ids"]
    assert ours.eos_token == ours.pad_token == EOT


def test_complete_hf_folder_rejects_a_tokenizer_larger_than_the_model(titan_model, tokenizer_dir, tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    small = dataclasses.replace(titan_model.model_args, vocab_size=64)
    with pytest.raises(HFExportError, match="does not belong to this model"):
        complete_hf_folder(tmp_path, small, tokenizer_dir)


# ---- export_step from a DCP save ----------------------------------------------------------


def _save_titan_step(model, run_dir: Path, step: int, tokenizer_dir: Path) -> Path:
    """A DCP step as TorchTitan writes it (model FQNs at top level beside optimizer, lr_scheduler,
    train_state), plus the runner's run_meta.json."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict, StateDictOptions

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    states = {
        **get_model_state_dict(model),
        "optimizer": get_optimizer_state_dict(
            model, optimizer, options=StateDictOptions(flatten_optimizer_state_dict=True)
        ),
        "lr_scheduler": {"last_epoch": step, "base_lrs": [1e-3]},
        "train_state": {"step": step, "ntokens_seen": 123},
    }
    step_dir = run_dir / "checkpoint" / f"step-{step}"
    dcp.save(states, checkpoint_id=str(step_dir), no_dist=True)
    meta = {
        "run_name": run_dir.name,
        "model_name": "molgen_qwen3",
        "flavor": "tiny",
        "model_args": dataclasses.asdict(model.model_args),
        "tokenizer_dir": str(tokenizer_dir),
    }
    (run_dir / "run_meta.json").write_text(json.dumps(meta))
    return step_dir


def test_export_step_from_dcp_reproduces_logits(titan_model, tokenizer_dir, batch, tmp_path):
    step_dir = _save_titan_step(titan_model, tmp_path / "run", 7, tokenizer_dir)
    out = export_step(step_dir, tmp_path / "hf")
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    diff = (_hf_logits(out, batch) - _titan_logits(titan_model, batch)).abs().max().item()
    assert diff <= 1e-4


def test_export_step_refuses_nonfinite_weights(titan_model, tokenizer_dir, tmp_path):
    broken = copy.deepcopy(titan_model)
    with torch.no_grad():
        broken.norm.weight[0] = float("nan")
    step_dir = _save_titan_step(broken, tmp_path / "run", 7, tokenizer_dir)
    with pytest.raises(HFExportError, match=r"1 tensors contain NaN/Inf \(model.norm.weight\); no HF folder"):
        export_step(step_dir, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_export_step_of_an_hf_format_step(titan_model, tokenizer_dir, batch, tmp_path):
    """A step saved in HF format (TorchTitan's HuggingFaceStorageWriter) is completed as stored."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    step_dir = _save_titan_step(titan_model, tmp_path / "run", 9, tokenizer_dir)
    hf_step = step_dir.parent / "step-10"
    hf_state = MolGenQwen3StateDictAdapter(titan_model.model_args, None).to_hf(titan_model.state_dict())
    writer = HuggingFaceStorageWriter(path=str(hf_step), save_distributed=True, enable_consolidation=True)
    dcp.save(hf_state, storage_writer=writer, no_dist=True)
    assert not (hf_step / ".metadata").exists() and (hf_step / "model.safetensors.index.json").is_file()

    out = export_step(hf_step, tmp_path / "hf")
    diff = (_hf_logits(out, batch) - _titan_logits(titan_model, batch)).abs().max().item()
    assert diff <= 1e-4
    # The per-checkpoint HF copy lives in step-N/hf; run_meta.json is then one level higher.
    shutil.copytree(hf_step, step_dir / "hf")
    assert (export_step(step_dir / "hf", tmp_path / "hf_sub") / "config.json").is_file()
    with pytest.raises(HFExportError, match="already in HF format"):
        export_step(hf_step, tmp_path / "hf_bf16", dtype="bfloat16")


def test_export_step_bfloat16(titan_model, tokenizer_dir, tmp_path):
    from safetensors import safe_open

    step_dir = _save_titan_step(titan_model, tmp_path / "run", 3, tokenizer_dir)
    out = export_step(step_dir, tmp_path / "hf", dtype="bfloat16")
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        emb = f.get_tensor("model.embed_tokens.weight")
    assert emb.dtype == torch.bfloat16
    assert torch.equal(emb, titan_model.tok_embeddings.weight.detach().to(torch.bfloat16))
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_cli_resolves_a_ckpts_alias(titan_model, tokenizer_dir, tmp_path, monkeypatch, capsys):
    _save_titan_step(titan_model, tmp_path / "runs" / "r1", 5, tokenizer_dir)
    aliases = tmp_path / "paths.yaml"
    aliases.write_text(f"ckpts:\n  mine: {tmp_path / 'runs'}\n")
    monkeypatch.setenv("MOLGEN3D_PATHS", str(aliases))
    assert hf_export.cli(["--checkpoint", "ckpts:mine/r1/checkpoint/step-5", "--out", str(tmp_path / "hf")]) == 0
    assert "exported" in capsys.readouterr().out
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "hf" / "tokenizer.json").is_file()


def test_export_errors_name_the_path(titan_model, tokenizer_dir, tmp_path, capsys):
    empty = tmp_path / "elsewhere" / "step-1"
    empty.mkdir(parents=True)
    with pytest.raises(HFExportError, match=r"step-1: neither a DCP checkpoint"):
        export_step(empty, tmp_path / "hf")

    lonely = _save_titan_step(titan_model, tmp_path / "lonely", 1, tokenizer_dir)
    (tmp_path / "lonely" / "run_meta.json").unlink()
    with pytest.raises(HFExportError, match=r"lonely/run_meta.json not found"):
        export_step(lonely, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()

    step_dir = _save_titan_step(titan_model, tmp_path / "run", 2, tokenizer_dir)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    assert hf_export.cli(["--checkpoint", str(step_dir), "--out", str(tmp_path / "full")]) == 1
    assert "not empty" in capsys.readouterr().err

    meta = json.loads((tmp_path / "run" / "run_meta.json").read_text())
    meta["model_args"]["n_layers"] = 3
    (tmp_path / "run" / "run_meta.json").write_text(json.dumps(meta))
    with pytest.raises(HFExportError, match=r"lacks model tensors \['layers.2"):
        export_step(step_dir, tmp_path / "hf2")


# ---- the adapter -------------------------------------------------------------------------


def test_from_hf_without_lm_head_takes_the_embedding(titan_model):
    adapter = MolGenQwen3StateDictAdapter(titan_model.model_args, None)
    hf_state = adapter.to_hf(titan_model.state_dict())
    keys_before = set(hf_state)
    state = adapter.from_hf(hf_state)
    assert set(hf_state) == keys_before  # the caller's dict is left alone
    assert state["output.weight"] is hf_state["model.embed_tokens.weight"]
    assert set(state) == set(titan_model.state_dict())

    with_head = {
        **hf_state,
        "lm_head.weight": torch.zeros_like(hf_state["model.embed_tokens.weight"]),
        "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8),
    }
    state = adapter.from_hf(with_head)
    assert state["output.weight"] is hf_state["model.embed_tokens.weight"]  # tied: the embedding wins
    assert None not in state

    untied = MolGenQwen3StateDictAdapter(dataclasses.replace(titan_model.model_args, enable_weight_tying=False), None)
    with pytest.raises(KeyError, match="not tied"):
        untied.from_hf(hf_state)


def test_overwrite_removes_the_weights_of_an_earlier_export(titan_model, tokenizer_dir, tmp_path):
    step_dir = _save_titan_step(titan_model, tmp_path / "run", 4, tokenizer_dir)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "model-00001-of-00001.safetensors").write_bytes(b"stale")
    export_step(step_dir, out, overwrite=True)
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]


# ---- steps that fail their checksums are refused ---------------------------------------------


def _flip_bytes(path: Path) -> None:
    """8 bytes XORed in the middle of the file: same size, finite-looking weights, DCP loads it."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0x5A for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


def test_export_step_refuses_a_step_that_fails_its_checksums(titan_model, tokenizer_dir, tmp_path):
    from molgen3D.hf.checkpoint_step import write_manifest

    step_dir = _save_titan_step(titan_model, tmp_path / "run", 7, tokenizer_dir)
    write_manifest(step_dir)
    shard = sorted(step_dir.glob("*.distcp"))[0]
    _flip_bytes(shard)
    with pytest.raises(HFExportError, match=re.escape(f"{shard} content changed since it was saved")):
        export_step(step_dir, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_export_of_a_step_without_checksums_warns_that_it_is_unverified(titan_model, tokenizer_dir, tmp_path, caplog):
    step_dir = _save_titan_step(titan_model, tmp_path / "run", 7, tokenizer_dir)
    with caplog.at_level(logging.WARNING):
        export_step(step_dir, tmp_path / "hf")
    assert f"{step_dir} has no checksums.json: its weights are UNVERIFIED" in caplog.text


def test_sampling_refuses_a_saved_step_that_fails_its_checksums(titan_model, tokenizer_dir, tmp_path):
    """`generate --model <step dir>`: an HF-format step is used as is, a DCP step converted; both are checked."""
    from safetensors.torch import save_file

    from molgen3D.generation.model_io import ModelLoadError, model_directory
    from molgen3D.hf.checkpoint_step import HF_INDEX, write_manifest

    hf_step = tmp_path / "run" / "checkpoint" / "step-9"
    hf_step.mkdir(parents=True)
    hf_state = MolGenQwen3StateDictAdapter(titan_model.model_args, None).to_hf(titan_model.state_dict())
    save_file({k: v.contiguous() for k, v in hf_state.items()}, str(hf_step / "model.safetensors"))
    (hf_step / HF_INDEX).write_text(json.dumps({"weight_map": {k: "model.safetensors" for k in hf_state}}))
    complete_hf_folder(hf_step, titan_model.model_args, tokenizer_dir)
    write_manifest(hf_step)
    assert model_directory(hf_step) == hf_step
    _flip_bytes(hf_step / "model.safetensors")
    with pytest.raises(ModelLoadError, match=re.escape(f"{hf_step / 'model.safetensors'} content changed")):
        model_directory(hf_step)

    dcp_step = _save_titan_step(titan_model, tmp_path / "run", 7, tokenizer_dir)
    write_manifest(dcp_step)
    _flip_bytes(sorted(dcp_step.glob("*.distcp"))[0])
    with pytest.raises(ModelLoadError, match="content changed since it was saved"):
        model_directory(dcp_step)


def test_a_step_changed_after_its_conversion_is_refused_not_served_from_the_cache(
    titan_model, tokenizer_dir, tmp_path, monkeypatch
):
    """`generate --model <DCP step>` reuses its conversion only while the step verifies against the same
    checksums.json: a shard rewritten in place with its size and mtime kept is caught, not served."""
    import os

    from molgen3D.generation.model_io import ModelLoadError, model_directory
    from molgen3D.hf.checkpoint_step import write_manifest

    monkeypatch.setenv("MOLGEN3D_CACHE", str(tmp_path / "cache"))
    step = _save_titan_step(titan_model, tmp_path / "run", 7, tokenizer_dir)
    write_manifest(step)
    converted = model_directory(step)
    assert (converted / "config.json").is_file() and (tmp_path / "cache") in converted.parents

    def no_conversion(*args, **kwargs):
        raise AssertionError("an unchanged step was converted again")

    monkeypatch.setattr(hf_export, "export_step", no_conversion)
    assert model_directory(step) == converted
    shard = sorted(step.glob("*.distcp"))[0]
    before = shard.stat()
    _flip_bytes(shard)
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(ModelLoadError) as info:
        model_directory(step)
    assert str(step) in str(info.value) and f"{shard} content changed since it was saved" in str(info.value)
