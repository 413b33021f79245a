"""init_mode = "hf_pretrain" through the Trainer starts from an HF export's weights (logits at step 0),
and export-hf of that run's first DCP step gives them back."""

from __future__ import annotations

import json

import pytest
import torch

from molgen3D.chem.tagged_text import TAGS
from molgen3D.hf.export import complete_hf_folder, export_step
from molgen3D.hf.state_dict_adapter import MolGenQwen3StateDictAdapter


@pytest.fixture
def tiny_export(tmp_path, compact_tokenizer_dir):
    """A complete HF folder of a random tiny-flavor model for the compact tokenizer (norms perturbed)."""
    from safetensors.torch import save_file
    from torchtitan.models.qwen3.model.model import Qwen3Model

    from molgen3D.tokenization.load import load_titan_tokenizer as load_molgen_tokenizer
    from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import (
        MOLGEN_FLAVORS,
        resolve_vocab_size,
        tokenizer_size,
    )

    tokenizer = load_molgen_tokenizer(compact_tokenizer_dir)
    args = MOLGEN_FLAVORS["tiny"]
    args.vocab_size = resolve_vocab_size(tokenizer_size(tokenizer), args.vocab_size)
    args.max_seq_len = 256
    torch.manual_seed(7)
    model = Qwen3Model(args)
    with torch.no_grad():
        model.init_weights()
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.2 * torch.randn_like(param))
    hf_dir = tmp_path / "base_hf"
    hf_dir.mkdir()
    hf_state = MolGenQwen3StateDictAdapter(args, None).to_hf(model.state_dict())
    save_file({k: v.contiguous() for k, v in hf_state.items()}, str(hf_dir / "model.safetensors"))
    return complete_hf_folder(hf_dir, args, compact_tokenizer_dir)


def _coordinate_batch(tokenizer_dir, fixture_data) -> torch.Tensor:
    """Two rows of 64 tokens of conformer text without tag tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    path = sorted((fixture_data / "train").glob("*.jsonl"))[0]
    texts = [json.loads(line)["embedded_smiles"] for line in path.read_text().splitlines()[:2]]
    rows = [tok(t)["input_ids"][:64] for t in texts]
    assert all(len(r) == 64 for r in rows)
    return torch.tensor(rows)


def _hf_logits(folder, batch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(batch).logits


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()


@pytest.mark.slow
@pytest.mark.parametrize("torn_first_save", [False, True], ids=["new-run", "after-a-crash-in-the-first-save"])
def test_hf_pretrain_starts_from_the_export(
    tiny_export, compact_tokenizer_dir, fixture_data, make_tiny_toml, train_tiny, monkeypatch, tmp_path, torn_first_save
):
    from tokenizers import Tokenizer
    from torchtitan.components.checkpoint import MODEL

    from molgen3D.training.pretraining.components.checkpoint import MolGenCheckpointManager

    batch = _coordinate_batch(compact_tokenizer_dir, fixture_data)
    tag_ids = [Tokenizer.from_file(str(compact_tokenizer_dir / "tokenizer.json")).token_to_id(t) for t in TAGS]
    assert None not in tag_ids and not set(tag_ids) & set(batch.flatten().tolist())

    captured = {}
    original_load = MolGenCheckpointManager.load

    def load_and_capture(self, step=-1):
        loaded = original_load(self, step)
        model = self.states[MODEL].model[0]
        with torch.no_grad():
            captured["logits"] = _full(model(batch))
        captured["embedding"] = _full(model.tok_embeddings.weight)
        captured["loaded"] = loaded
        return loaded

    monkeypatch.setattr(MolGenCheckpointManager, "load", load_and_capture)
    # 2 steps: optimizer step 0 runs at WSDS lr 0 (warmup), so the step-1 DCP holds the step-0 weights.
    # Our export ships the run's tokenizer, so its tag rows are trained: "auto" keeps them; the
    # restarted run forces a re-initialisation with reinit_tag_rows = "always".
    reinit = "always" if torn_first_save else "auto"
    toml = make_tiny_toml(
        "hf-pretrain",
        molgen_run={"init_mode": "hf_pretrain", "base_model_tag": str(tiny_export), "reinit_tag_rows": reinit},
        training={"steps": 2},
        wsds_scheduler={"warmup_steps": 1, "checkpoints": [2], "decay_frac": 0.5},
        checkpoint={"enable": True, "interval": 1, "keep_latest_k": 0},
    )
    if torn_first_save:
        # A run that died while writing its first checkpoint, restarted under the same name:
        # the folder exists but holds nothing to resume, so the HF initial load must still happen.
        torn = tmp_path / "ckpts" / "hf-pretrain" / "checkpoint" / "step-1"
        torn.mkdir(parents=True)
        (torn / "__0_0.distcp").write_bytes(b"partial")
    result = train_tiny(toml)
    assert captured["loaded"] is True

    reference = _hf_logits(tiny_export, batch)
    keep = [i for i in range(reference.shape[-1]) if i not in tag_ids or reinit == "auto"]
    assert (captured["logits"][..., keep] - reference[..., keep]).abs().max().item() <= 1e-4

    # "always": exactly the tag rows were re-initialised after the load (the tied head follows
    # them); "auto" on our own export: none.
    from safetensors import safe_open

    with safe_open(str(tiny_export / "model.safetensors"), framework="pt") as f:
        exported = f.get_tensor("model.embed_tokens.weight")
    changed = (captured["embedding"] != exported).any(dim=1).nonzero().flatten().tolist()
    assert sorted(changed) == (sorted(tag_ids) if reinit == "always" else [])

    step_dir = result.checkpoint_dir / "step-1"
    out = export_step(step_dir, step_dir.parent.parent / "hf_step1")
    assert (_hf_logits(out, batch) - captured["logits"]).abs().max().item() <= 1e-4
