"""The molgen_qwen3 train spec without training: registration, flavors, vocabulary, CPU layer, MFU peak."""

from __future__ import annotations

import contextlib
import importlib
import logging
import math

import pytest
import torch

from molgen3D.training.pretraining import patches
from molgen3D.training.pretraining.torchtitan_model import qwen3_custom
from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import (
    MOLGEN_FLAVORS,
    QWEN3_PADDED_VOCAB,
    resolve_vocab_size,
)


def test_importing_twice_registers_once():
    from torchtitan.models.qwen3 import Qwen3Model
    from torchtitan.protocols.train_spec import get_train_spec

    importlib.reload(qwen3_custom)
    qwen3_custom.register()
    spec = get_train_spec("molgen_qwen3")
    assert issubclass(spec.model_cls, Qwen3Model)  # MolGenQwen3Model: TorchTitan's, plus block-causal SDPA
    assert spec.parallelize_fn.__name__ == "parallelize_molgen_qwen3"


def test_flavors_are_tied_and_0_6b_has_the_qwen3_shape():
    assert set(MOLGEN_FLAVORS) == {"tiny", "small", "0.6B"}
    assert all(a.enable_weight_tying for a in MOLGEN_FLAVORS.values())
    big = MOLGEN_FLAVORS["0.6B"]
    assert (big.dim, big.n_layers, big.n_heads, big.n_kv_heads, big.head_dim, big.hidden_dim, big.vocab_size) == (
        1024,
        28,
        16,
        8,
        128,
        3072,
        151_936,
    )
    tiny = MOLGEN_FLAVORS["tiny"]
    assert (tiny.dim, tiny.n_layers, tiny.n_heads, tiny.n_kv_heads, tiny.head_dim, tiny.hidden_dim) == (
        128,
        4,
        4,
        2,
        32,
        384,
    )


@pytest.mark.parametrize(
    "n_tokens, flavor_vocab, expected",
    [
        (14_555, 64, 14_592),  # compact tokenizer: next multiple of 64
        (1_152, 64, 1_152),  # already a multiple
        (151_673, QWEN3_PADDED_VOCAB, QWEN3_PADDED_VOCAB),  # qwen3_0.6b_custom keeps Qwen3's padded rows
        (151_673, 64, 151_680),  # a small flavor does not carry Qwen3's padding
        (151_937, QWEN3_PADDED_VOCAB, 152_000),  # too big for Qwen3's rows: grow
    ],
)
def test_resolve_vocab_size(n_tokens, flavor_vocab, expected):
    assert resolve_vocab_size(n_tokens, flavor_vocab) == expected


def _tokenizer_ids(tokenizer_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    return max(tok.get_vocab(with_added_tokens=True).values()) + 1, tok.token_to_id("<|endoftext|>")


@pytest.mark.parametrize("flavor, tokenizer", [("tiny", "compact"), ("0.6B", "qwen_custom")])
def test_model_args_follow_the_tokenizer(flavor, tokenizer, request, make_tiny_toml):
    from torchtitan.protocols.train_spec import get_train_spec

    from molgen3D.training.pretraining.config.loading import load_job_config

    tokenizer_dir = request.getfixturevalue(f"{tokenizer}_tokenizer_dir")
    toml = make_tiny_toml("args", molgen_run={"tokenizer_tag": str(tokenizer_dir)}, model={"flavor": flavor})
    job_config = load_job_config(toml)
    spec = get_train_spec("molgen_qwen3")
    args = spec.model_args[flavor]
    args.update_from_config(job_config)
    n_ids, eos = _tokenizer_ids(tokenizer_dir)
    assert args.vocab_size >= n_ids
    assert args.vocab_size == (QWEN3_PADDED_VOCAB if flavor == "0.6B" else 64 * math.ceil(n_ids / 64))
    assert args.eos_id == eos
    assert args.max_seq_len == job_config.training.seq_len
    assert spec.model_args[flavor].vocab_size == MOLGEN_FLAVORS[flavor].vocab_size, "lookups hand out fresh copies"


def test_cpu_layer_rebinds_every_device_name():
    assert not patches.accelerator_available(), "these tests run on the CPU-only machine"
    assert patches.apply_cpu_layer() is True and patches.is_cpu_run()
    for module_name, names in patches.DEVICE_BINDINGS.items():
        module = importlib.import_module(module_name)
        for name in names:
            value = getattr(module, name)
            if name == "device_type":
                assert value == "cpu", module_name
            else:
                assert isinstance(value, patches.CpuDeviceModule), module_name
    device = patches.CpuDeviceModule()
    assert device.get_device_properties().total_memory > 0
    assert device.memory_stats()["reserved_bytes.all.peak"] > 0


def test_cpu_amp_computes_fp32_and_warns_about_bf16(monkeypatch, caplog):
    from torchtitan.distributed import utils as dist_utils

    monkeypatch.setattr(patches, "_warned_amp", False)
    with caplog.at_level(logging.WARNING):
        context = dist_utils.maybe_enable_amp(None, "bfloat16", "cpu")
    assert isinstance(context, contextlib.nullcontext)
    with context:
        product = torch.ones(4, 4) @ torch.ones(4, 4)
    assert product.dtype == torch.float32, "bf16 autocast would have produced bfloat16"
    assert "mixed_precision_param = 'bfloat16' ignored on CPU" in caplog.text
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        dist_utils.maybe_enable_amp(None, "bfloat16", "cpu")
    assert "ignored on CPU" not in caplog.text, "warned once"


def test_mfu_peak_is_dense_on_h100_and_absent_on_cpu():
    from torchtitan.tools import utils

    from molgen3D.training.pretraining.components.metrics_processor import usable_peak_flops

    titan_peak = patches.ORIGINALS["torchtitan.tools.utils.get_peak_flops"]
    assert titan_peak("NVIDIA H100 80GB HBM3") == 989e12, "dense bf16, not the sparse 1979e12"
    assert usable_peak_flops(titan_peak("NVIDIA H100 80GB HBM3")) == 989e12
    assert usable_peak_flops(utils.get_peak_flops("CPU")) is None, "no MFU on a CPU"
