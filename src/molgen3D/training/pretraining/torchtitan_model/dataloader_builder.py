"""The `molgen_qwen3` dataloader builder: `[molgen_data]` -> packed conformer batches.

The training loader and the validator's loader are the same class with different settings
(split, length, batch, one finite unshuffled pass), so both are built here, on the tokenizer
the Trainer hands over (`TrainSpec.build_tokenizer_fn`, the one the model's vocabulary comes from).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from molgen3D.chem.coordinate_format import check_data_format
from molgen3D.training.pretraining.config.finalize import resolved
from molgen3D.training.pretraining.dataprocessing.dataloader import JsonlTaggedPackedDataset, TitanStatefulDataLoader


def build_molgen_dataloader(
    dp_world_size: int,
    dp_rank: int,
    tokenizer: Any,
    job_config: Any,
    *,
    data_path: str | Path | None = None,
    seq_len: int | None = None,
    batch_size: int | None = None,
    infinite: bool | None = None,
    shuffle_lines: bool | None = None,
    num_workers: int | None = None,
) -> TitanStatefulDataLoader:
    """The packed loader of a split on the Trainer's `tokenizer`; the keyword overrides serve the validator."""
    if tokenizer is None:
        raise ValueError("the molgen_qwen3 dataloader needs the Trainer's tokenizer (TrainSpec.build_tokenizer_fn)")
    settled = resolved(job_config)
    paths, data, loader = settled.paths, job_config.molgen_data, settled.loader
    workers = loader.num_workers if num_workers is None else num_workers
    check_data_format(paths.train_data if data_path is None else data_path, paths.tokenizer_dir)
    dataset = JsonlTaggedPackedDataset(
        str(paths.train_data if data_path is None else data_path),
        tokenizer,
        settled.seq_len if seq_len is None else seq_len,
        min_emb_len=data.min_emb_len,
        shuffle_lines=data.shuffle_lines if shuffle_lines is None else shuffle_lines,
        infinite=data.infinite if infinite is None else infinite,
        seed=settled.data_seed,
        lookahead_limit=data.lookahead_limit,
        dp_rank=dp_rank,
        dp_world_size=dp_world_size,
        truncate_overflow_units=data.truncate_overflow_units,
    )
    return TitanStatefulDataLoader(
        dataset,
        dp_rank=dp_rank,
        dp_world_size=dp_world_size,
        batch_size=settled.batch.local_batch if batch_size is None else batch_size,
        num_workers=workers,
        pin_memory=loader.pin_memory,
        prefetch_factor=loader.prefetch_factor if loader.prefetch_factor is not None else 2,
        persistent_workers=loader.persistent_workers and workers > 0,
    )
