"""Every private or internal TorchTitan / torchdata / torch member MolGen3D relies on, in one list.

An upgrade that renames or restructures one of them fails here, naming it, instead of deep in a
training run (or, worse, not at all: a rebinding that nothing reads any more is silently ignored).
The patches themselves live in src/molgen3D/training/pretraining/patches.py.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect

import pytest

PINNED = {"torchtitan": "0.2.2", "torchdata": "0.11.0", "torch": "2.13.0"}

# (module, attribute path): module-level names and class members read or overridden by our code.
MEMBERS = [
    # patches.py: the CPU layer's targets (device names copied at import, AMP, the MFU peak table)
    ("torchtitan.tools.utils", "device_type"),
    ("torchtitan.tools.utils", "device_module"),
    ("torchtitan.tools.utils", "get_peak_flops"),
    ("torchtitan.components.metrics", "device_type"),
    ("torchtitan.components.metrics", "device_module"),
    ("torchtitan.distributed.utils", "device_type"),
    ("torchtitan.distributed.utils", "device_module"),
    ("torchtitan.distributed.utils", "maybe_enable_amp"),
    ("torchtitan.distributed.parallel_dims", "device_type"),
    ("torchtitan.tools.profiling", "device_module"),
    ("torch._utils", "_get_available_device_type"),
    # patches.py: names rebound so the Trainer builds our classes
    ("torchtitan.train", "CheckpointManager"),
    ("torchtitan.components.metrics", "WandBLogger"),
    ("torchtitan.components.metrics", "_build_metric_logger"),
    # components/checkpoint.py: MolGenCheckpointManager overrides and calls these
    ("torchtitan.components.checkpoint", "CheckpointManager._should_save"),
    ("torchtitan.components.checkpoint", "CheckpointManager._create_checkpoint_id"),
    ("torchtitan.components.checkpoint", "CheckpointManager._find_load_step"),
    ("torchtitan.components.checkpoint", "CheckpointManager._purge_stale_checkpoints"),
    ("torchtitan.components.checkpoint", "CheckpointManager.dcp_save"),
    ("torchtitan.components.checkpoint", "CheckpointManager.load"),
    ("torchtitan.components.checkpoint", "CheckpointManager.save"),
    ("torchtitan.components.checkpoint", "MODEL"),
    ("torchtitan.components.checkpoint", "AsyncMode.DISABLED"),
    # patches.py: the per-step gradient clipping the non-finite guard wraps (trainer.py, one step at a time)
    ("torchtitan.distributed.utils", "clip_grad_norm_"),
    ("torchtitan.train", "Trainer.train_step"),
    # document_masking.py / flops.py: Qwen3 internals the masked model and the FLOP count use
    ("torchtitan.models.qwen3.model.model", "Qwen3Model.get_attention_masks"),
    ("torchtitan.models.qwen3.model.model", "Attention.forward"),
    ("torchtitan.models.qwen3.model.args", "Qwen3ModelArgs.get_nparams_and_flops"),
    # components/metrics.py: MolGenMetricsProcessor replaces `log` and extends `log_validation`
    ("torchtitan.components.metrics", "MetricsProcessor.log"),
    ("torchtitan.components.metrics", "MetricsProcessor.log_validation"),
    # components/lr_scheduler.py: the container whose resume keeps this run's base lr
    ("torchtitan.components.lr_scheduler", "LRSchedulersContainer.load_state_dict"),
    ("torch.optim.lr_scheduler", "LambdaLR.get_last_lr"),
    # components/validate.py
    ("torchtitan.components.validate", "BaseValidator.should_validate"),
    ("torchtitan.components.loss", "IGNORE_INDEX"),
    # config/loading.py: the merged config class, exactly as ConfigManager builds it
    ("torchtitan.config", "ConfigManager._merge_configs"),
    # torchtitan_model/parallelize.py
    ("torchtitan.models.qwen3.infra.parallelize", "_op_sac_save_list"),
    # dataprocessing/dataloader.py: the dataset states inside torchdata's loader state
    ("torchdata.stateful_dataloader.incremental_state", "_DATASET_STATE"),
    ("torchdata.stateful_dataloader.stateful_dataloader", "_StatefulMultiProcessingDataLoaderIter._SNAPSHOT"),
    ("torchdata.stateful_dataloader.stateful_dataloader", "_StatefulMultiProcessingDataLoaderIter._WORKER_SNAPSHOTS"),
    ("torchtitan.components.dataloader", "ParallelAwareDataloader"),
    # hf/state_dict_adapter.py: the shard offsets of a DTensor embedding
    ("torch.distributed.tensor._utils", "compute_local_shape_and_global_offset"),
    # patches.py: the varlen wrapper whose forward gains enable_gqa, and the compiled kernel it calls
    ("torchtitan.models.attention", "VarlenAttentionWrapper.forward"),
    ("torchtitan.models.attention", "VarlenAttentionWrapper._compiled_varlen_attn"),
]

# (module, class, method whose source sets them, instance attributes our code reads or writes)
INSTANCE_ATTRIBUTES = [
    (
        "torchtitan.components.checkpoint",
        "CheckpointManager",
        "__init__",
        (
            "enable",
            "states",
            "sd_adapter",
            "folder",
            "load_only",
            "last_save_in_hf",
            "export_dtype",
            "keep_latest_k",
            "purge_queue",
            "enable_ft_dataloader_checkpoints",
            "ft_manager",
            "async_mode",
            "save_future",
        ),
    ),
    ("torchtitan.models.qwen3.model.model", "Qwen3Model", "__init__", ("model_args", "layers")),
    ("torchtitan.models.qwen3.model.model", "Attention", "__init__", ("inner_attention",)),
    # trainer.py: MolGenTrainer hands `dataloader` to `metrics_processor` and names `step` in guard messages
    (
        "torchtitan.train",
        "Trainer",
        "__init__",
        ("step", "gradient_accumulation_steps", "dataloader", "metrics_processor"),
    ),
    (
        "torchtitan.components.metrics",
        "MetricsProcessor",
        "__init__",
        (
            "job_config",
            "parallel_dims",
            "logger",
            "device_memory_monitor",
            "gpu_peak_flops",
            "color",
            "ntokens_since_last_log",
            "data_loading_times",
            "time_last_log",
            "num_flops_per_token",
        ),
    ),
    ("torch.optim.lr_scheduler", "LRScheduler", "__init__", ("base_lrs", "last_epoch", "optimizer")),
    ("torch.optim.lr_scheduler", "LambdaLR", "__init__", ("lr_lambdas",)),
    ("torch.optim.lr_scheduler", "LRScheduler", "_update_lr", ("_last_lr",)),
    (
        "torchdata.stateful_dataloader.stateful_dataloader",
        "StatefulDataLoader",
        "__init__",
        ("_iterator", "next_iter_state"),
    ),
    ("torchtitan.components.tokenizer", "HuggingFaceTokenizer", "__init__", ("tokenizer", "eos_id")),
    ("torchtitan.components.checkpoint", "ModelWrapper", "__init__", ("model",)),
]

# (module, function, global names it must look up at call time for our rebinding to take effect)
LOOKUPS = [
    ("torchtitan.train", "Trainer.__init__", "CheckpointManager"),
    ("torchtitan.components.metrics", "_build_metric_logger", "WandBLogger"),
    ("torchtitan.train", "Trainer.train_step", "clip_grad_norm_"),
]


def _resolve(module_name: str, path: str):
    obj = importlib.import_module(module_name)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("package, version", sorted(PINNED.items()))
def test_pinned_versions(package, version):
    assert importlib.metadata.version(package).split("+")[0] == version, f"MolGen3D targets {package} {version}"


@pytest.mark.parametrize("module_name, path", MEMBERS, ids=[f"{m}.{p}" for m, p in MEMBERS])
def test_member_exists(module_name, path):
    try:
        _resolve(module_name, path)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"{module_name}.{path} is gone ({err}); see where it is used before upgrading")


@pytest.mark.parametrize(
    "module_name, cls, method, names", INSTANCE_ATTRIBUTES, ids=[c for _, c, _, _ in INSTANCE_ATTRIBUTES]
)
def test_instance_attributes_are_still_set(module_name, cls, method, names):
    source = inspect.getsource(inspect.unwrap(_resolve(module_name, f"{cls}.{method}")))
    missing = [name for name in names if f"self.{name}" not in source]
    assert not missing, f"{module_name}.{cls}.{method} no longer sets {missing}"


@pytest.mark.parametrize("module_name, function, name", LOOKUPS, ids=[f for _, f, _ in LOOKUPS])
def test_rebound_names_are_looked_up_at_call_time(module_name, function, name):
    code = inspect.unwrap(_resolve(module_name, function)).__code__
    assert name in code.co_names, f"{module_name}.{function} no longer builds {name} by its module-level name"


def test_checkpoint_load_decides_resume_by_the_folder():
    """MolGenCheckpointManager.load points `folder` elsewhere to make TorchTitan take the initial-load branch."""
    from torchtitan.components.checkpoint import CheckpointManager

    assert "os.path.exists(self.folder)" in inspect.getsource(CheckpointManager.load)


def test_a_patch_target_that_changed_fails_loudly(monkeypatch):
    import torchtitan.train

    from molgen3D.training.pretraining import patches

    patches.install()
    monkeypatch.setattr(torchtitan.train, "CheckpointManager", type("SomethingElse", (), {}))
    with pytest.raises(
        patches.TorchTitanPatchError, match=r"torchtitan.train.CheckpointManager .* not TorchTitan's original.*0\.2\.2"
    ):
        patches.install_checkpoint_manager()


def test_a_name_nobody_looks_up_any_more_fails_loudly(monkeypatch):
    import torchtitan.components.metrics as titan_metrics

    from molgen3D.training.pretraining import patches

    monkeypatch.setattr(titan_metrics, "_build_metric_logger", lambda job_config, parallel_dims, tag=None: None)
    with pytest.raises(patches.TorchTitanPatchError, match="no longer looks up 'WandBLogger'"):
        patches.install_wandb_folder()


def test_install_makes_the_trainer_build_our_classes():
    import torchtitan.components.metrics as titan_metrics
    import torchtitan.train

    from molgen3D.training.pretraining import patches
    from molgen3D.training.pretraining.components.checkpoint import MolGenCheckpointManager
    from molgen3D.training.pretraining.components.metrics_processor import RunFolderWandBLogger

    patches.install()
    patches.install()  # idempotent
    assert torchtitan.train.CheckpointManager is MolGenCheckpointManager
    assert titan_metrics.WandBLogger is RunFolderWandBLogger


def test_the_varlen_patch_passes_enable_gqa_and_refuses_a_changed_target(monkeypatch):
    from torchtitan.models.attention import VarlenAttentionWrapper

    from molgen3D.training.pretraining import patches

    patches.install()
    assert VarlenAttentionWrapper.forward is patches.varlen_forward_with_gqa
    original = patches.ORIGINALS[patches.VARLEN_FORWARD]
    assert "enable_gqa" not in inspect.getsource(original), "TorchTitan passes enable_gqa now: drop the patch"
    monkeypatch.setattr(VarlenAttentionWrapper, "forward", lambda self, xq, xk, xv, attention_masks, scale=None: xq)
    with pytest.raises(patches.TorchTitanPatchError, match=r"VarlenAttentionWrapper.forward .* not TorchTitan's"):
        patches.install_varlen_gqa()
