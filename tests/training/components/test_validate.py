"""The validator's loss on one process, with a fixed stand-in model (no Trainer)."""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import pytest
import torch
from torchtitan.components.loss import cross_entropy_loss

from molgen3D.training.pretraining.config.loading import load_job_config
from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset
from molgen3D.training.pretraining.components.validate import MolGenValidator
from molgen3D.training.pretraining import patches

patches.apply_cpu_layer()  # as the runner does before every Trainer


class BigramModel(torch.nn.Module):
    """Logits depend on the current token only: deterministic and cheap."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)
        torch.nn.init.normal_(self.table.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table(tokens)


def _validator(toml) -> MolGenValidator:
    from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import build_molgen_tokenizer

    job_config = load_job_config(toml)
    return MolGenValidator(
        job_config=job_config,
        dp_world_size=1,
        dp_rank=0,
        tokenizer=build_molgen_tokenizer(job_config),
        parallel_dims=SimpleNamespace(dp_enabled=False),
        loss_fn=cross_entropy_loss,
        validation_context=contextlib.nullcontext,
        maybe_enable_amp=contextlib.nullcontext(),
        metrics_processor=SimpleNamespace(ntokens_since_last_log=0),
    )


@pytest.fixture
def qwen(compact_tokenizer_dir):
    """A random tiny TorchTitan Qwen3 for the compact tokenizer: the probe rebuilds it as a transformers model."""
    import copy

    from torchtitan.models.qwen3 import Qwen3Model
    from tokenizers import Tokenizer

    from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import MOLGEN_FLAVORS, resolve_vocab_size

    tok = Tokenizer.from_file(str(compact_tokenizer_dir / "tokenizer.json"))
    args = copy.deepcopy(MOLGEN_FLAVORS["tiny"])
    args.vocab_size = resolve_vocab_size(tok.get_vocab_size(with_added_tokens=True), args.vocab_size)
    args.eos_id, args.max_seq_len = tok.token_to_id("<|endoftext|>"), 256
    torch.manual_seed(0)
    model = Qwen3Model(args)
    with torch.no_grad():
        model.init_weights()
    return model


@pytest.fixture
def model(compact_tokenizer_dir) -> BigramModel:
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(compact_tokenizer_dir / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    return BigramModel(vocab)


def test_full_pass_is_the_token_weighted_loss_over_the_split(
    make_tiny_toml, compact_tokenizer_dir, fixture_data, model
):
    validator = _validator(make_tiny_toml("val", validation={"enable": True, "steps": -1, "freq": 5}))
    loss, batches, tokens = validator.validation_loss(model)

    dataset = JsonlTaggedPackedDataset(
        str(fixture_data / "valid"), str(compact_tokenizer_dir), 256, shuffle_lines=False, infinite=False, seed=1234
    )
    total, count, samples = 0.0, 0, 0
    with torch.no_grad():
        for sample, labels in dataset:
            total += float(cross_entropy_loss(model(sample["input"][None]), labels[None]))
            count += int((labels != -100).sum())
            samples += 1
    assert tokens == count
    assert batches == -(-samples // 4), "every sample once, in batches of validation.local_batch_size"
    assert loss == pytest.approx(total / count, rel=1e-6)


def test_a_limited_pass_sees_the_same_batches_every_time(make_tiny_toml, model):
    validator = _validator(make_tiny_toml("val", validation={"enable": True, "steps": 1, "freq": 5}))
    first = validator.validation_loss(model)
    second = validator.validation_loss(model)
    assert first[1] == 1 and first == second
    with torch.no_grad():
        model.table.weight.mul_(0.5)
    assert validator.validation_loss(model)[0] != first[0], "the loss depends on the model"


def test_sampling_schedule_is_separate_from_the_loss_schedule(make_tiny_toml):
    validator = _validator(make_tiny_toml("val", validation={"enable": True, "steps": 1, "freq": 5}))
    assert [s for s in range(1, 12) if validator.should_validate(s)] == [1, 5, 10]
    assert not validator.sampling_due(10), "sample_conformers_freq = 0 means off"


def test_conformer_sampling_is_wired_to_the_training_probe(make_tiny_toml, qwen, monkeypatch, compact_tokenizer_dir):
    """The probe decodes a transformers copy of the model's full weights (KV cache), not the FSDP forward."""
    from molgen3D.evaluation import training_probe

    calls = {}

    def load_references(path, num_molecules, seed):
        calls["references"] = (str(path), num_molecules, seed)
        return [("CCO", [])]

    def sample_and_score(
        logits_fn,
        tokenizer,
        references,
        *,
        samples_per_molecule,
        max_new_tokens,
        temperature,
        seed,
        device,
        hf_model,
    ):
        assert logits_fn is None
        calls["ids"] = torch.tensor([tokenizer.encode("[SMILES]C[/SMILES]", add_special_tokens=False)])
        calls["logits"] = hf_model(input_ids=calls["ids"]).logits
        calls["settings"] = (references, samples_per_molecule, max_new_tokens, temperature, seed)
        return {"conformer_validity": 0.5, "conformer_mean_best_rmsd": 1.25, "conformer_samples": 4}

    monkeypatch.setattr(training_probe, "load_references", load_references)
    monkeypatch.setattr(training_probe, "sample_and_score", sample_and_score)
    toml = make_tiny_toml(
        "val",
        validation={
            "enable": True,
            "steps": 1,
            "freq": 10,
            "sample_conformers_freq": 4,
            "sample_conformers_molecules": 3,
            "sample_conformers_per_molecule": 2,
            "sample_max_new_tokens": 50,
            "sample_temperature": 0.7,
        },
    )
    validator = _validator(toml)
    logged = []
    validator.metrics_processor = SimpleNamespace(
        ntokens_since_last_log=0,
        log_validation=lambda loss, step, extra_metrics: logged.append((step, loss, extra_metrics)),
        log_sampling=lambda step, metrics: logged.append((step, None, metrics)),
    )
    assert [s for s in range(1, 11) if validator.should_validate(s)] == [1, 4, 8, 10]
    validator.validate([qwen], 8)
    assert calls["references"][1:] == (3, 1234)
    assert calls["settings"] == ([("CCO", [])], 2, 50, 0.7, 1234)
    with torch.no_grad():
        torch.testing.assert_close(calls["logits"], qwen(calls["ids"]), atol=1e-4, rtol=1e-4)
    assert logged == [
        (
            8,
            None,
            {
                "validation_metrics/conformer_validity": 0.5,
                "validation_metrics/conformer_mean_best_rmsd": 1.25,
                "validation_metrics/conformer_samples": 4,
            },
        )
    ]
    validator.validate([qwen], 10)  # a loss step; sampling only every 4
    step, loss, extra = logged[-1]
    assert step == 10 and loss is not None and "validation_metrics/conformer_validity" not in extra
    assert qwen.training, "validate() puts the model back in train mode"


def test_the_real_training_probe_scores_samples(make_tiny_toml, qwen):
    """The validator's probe (KV-cache copy of the gathered weights) scores exactly what the training probe
    scores on the model's own forward with the same molecules, seed and budget."""
    from molgen3D.chem.tagged_text import format_prompt
    from molgen3D.evaluation import training_probe

    toml = make_tiny_toml(
        "val",
        validation={
            "enable": True,
            "steps": 1,
            "freq": 10,
            "sample_conformers_freq": 5,
            "sample_conformers_molecules": 1,
            "sample_conformers_per_molecule": 2,
            "sample_max_new_tokens": 4096,
        },
    )
    validator = _validator(toml)
    metrics = validator.sample_conformers(qwen)
    cfg = validator.job_config
    seed = validator.settled.data_seed
    references = training_probe.load_references(validator.paths.valid_data, 1, seed)
    tokenizer = validator._sampling_tokenizer
    prompt = max(len(tokenizer.encode(format_prompt(s), add_special_tokens=False)) for s, _ in references)
    with torch.no_grad():
        expected = training_probe.sample_and_score(
            lambda ids: qwen(ids),
            tokenizer,
            references,
            samples_per_molecule=2,
            max_new_tokens=min(4096, cfg.training.seq_len - prompt),
            temperature=cfg.validation.sample_temperature,
            seed=seed,
        )
    assert metrics["validation_metrics/conformer_samples"] == expected["conformer_samples"] == 2
    assert metrics["validation_metrics/conformer_validity"] == expected["conformer_validity"]
    rmsd = metrics["validation_metrics/conformer_mean_best_rmsd"]
    assert math.isfinite(rmsd) and rmsd > 0.0
    assert rmsd == pytest.approx(expected["conformer_mean_best_rmsd"], abs=1e-6)


def test_a_flex_model_gets_its_document_masks(make_tiny_toml, model, compact_tokenizer_dir):
    """A block-causal flex/varlen model asserts on a forward without masks; validation passes them."""

    class FlexStandIn(BigramModel):
        model_args = SimpleNamespace(attn_type="flex")

        def __init__(self, vocab):
            super().__init__(vocab)
            self.mask_calls = []

        def get_attention_masks(self, input_batch, tokenizer, extra_inputs=None):
            self.mask_calls.append(input_batch.shape)
            return ("mask", input_batch.shape)

        def forward(self, tokens, attention_masks=None):
            assert attention_masks == ("mask", tokens.shape), "flex attention needs the batch's block mask"
            return super().forward(tokens)

    flex = FlexStandIn(model.table.num_embeddings)
    flex.load_state_dict(model.state_dict())
    validator = _validator(make_tiny_toml("val", validation={"enable": True, "steps": 1, "freq": 5}))
    loss, batches, _ = validator.validation_loss(flex)
    assert batches == 1 and len(flex.mask_calls) == 1
    assert loss == validator.validation_loss(model)[0], "masks change attention, never the labels or the loss rule"
