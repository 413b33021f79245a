"""generate/evaluate sample in the coordinate format the model folder records; other options are errors."""

from __future__ import annotations

import json
import shutil

from molgen3D.chem.coordinate_format import CoordinateFormat, write_format
from molgen3D.generation import generate as generate_module
from molgen3D.generation.sample_io import summary_path

FMT = CoordinateFormat(decimals=2, frame="canonical", positions="local")


def test_generate_uses_the_recorded_format_and_refuses_another(compact_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(compact_model_dir, model)
    write_format(model, FMT)
    smi = tmp_path / "m.smi"
    smi.write_text("CCO ethanol\n")
    out = tmp_path / "s.sdf"
    base = [
        "--model",
        str(model),
        "--smiles",
        str(smi),
        "--num-samples",
        "2",
        "--out",
        str(out),
        "--max-new-tokens",
        "60",
        "--no-progress",
        "--threads",
        "1",
    ]
    assert generate_module.cli(base) == 0
    summary = json.loads(summary_path(out).read_text())
    assert summary["settings"]["precision"] == 2 and summary["settings"]["positions"] == "local"
    capsys.readouterr()
    assert generate_module.cli([*base, "--precision", "4"]) == 1
    err = capsys.readouterr().err
    assert "--precision 4" in err and "trained on coordinate format d2-canonical-local" in err


def test_the_exported_model_folder_carries_the_tokenizer_format(tokenizer_root, tmp_path):
    import torch
    from safetensors.torch import save_file
    from torchtitan.models.qwen3.model.args import Qwen3ModelArgs
    from torchtitan.models.qwen3.model.model import Qwen3Model

    from molgen3D.chem.coordinate_format import read_format
    from molgen3D.tokenization.build import CPU_DEFAULT, CPU_DEFAULT_FORMAT
    from molgen3D.hf.export import complete_hf_folder
    from molgen3D.hf.state_dict_adapter import (
        MolGenQwen3StateDictAdapter,
    )

    tokenizer_dir = tokenizer_root / CPU_DEFAULT
    vocab = json.loads((tokenizer_dir / "molgen3d_tokenizer.json").read_text())["vocab_size"]
    args = Qwen3ModelArgs(
        vocab_size=64 * -(-vocab // 64),
        dim=32,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        head_dim=16,
        hidden_dim=64,
        max_seq_len=64,
        enable_weight_tying=True,
    )
    model = Qwen3Model(args)
    with torch.no_grad():
        model.init_weights()
    state = MolGenQwen3StateDictAdapter(args, None).to_hf(model.state_dict())
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    complete_hf_folder(tmp_path, args, tokenizer_dir)
    assert read_format(tmp_path) == CPU_DEFAULT_FORMAT
