"""One 30-step tiny run (the shared `tiny_run`): learning, decay-end checkpoints, validation, metrics."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from molgen3D.hf.checkpoint_step import step_dirs, structure_problem
from molgen3D.training.pretraining.wsds import wsds_lr

pytestmark = pytest.mark.slow  # trains a model end to end

STEP_LINE = re.compile(
    r"step:\s+(\d+)\s+loss:\s+([\d.]+).*?lr: ([\d.e+-]+).*?tps: ([\d,]+)\s+"
    r"units/s: ([\d.]+)\s+padding: ([\d.]+)%\s+skipped: (\d+).*?mfu: (\S+)"
)


def test_loss_falls_on_fixture_data(tiny_run):
    losses = tiny_run.result.losses
    assert sorted(losses) == list(range(1, 31)), "log_freq = 1 logs every step"
    assert all(math.isfinite(v) for v in losses.values())
    first = losses[1]
    last = sum(losses[s] for s in range(26, 31)) / 5
    assert last < 0.75 * first, f"loss did not fall: step 1 {first:.3f}, steps 26-30 mean {last:.3f}"


def test_checkpoint_at_every_decay_end_and_decay_ends_never_purged(tiny_run):
    # interval 7 saves 7, 14, 21, 28; decay ends 10, 20, 30 (30 is also the last step);
    # keep_latest_k = 2 keeps the newest two interval saves and never the decay ends' place.
    saved = {step: path for step, path in step_dirs(tiny_run.checkpoint_dir)}
    assert sorted(saved) == [10, 20, 21, 28, 30]
    for step, path in saved.items():
        assert structure_problem(path) is None, f"step-{step} is not a complete checkpoint"


def test_validation_loss_on_the_valid_split(tiny_run):
    losses = tiny_run.validation_losses
    assert sorted(losses) == [1, 10, 20, 30], "validation at step 1 and every validation.freq = 10 steps"
    assert all(math.isfinite(v) for v in losses.values())
    assert losses[30] < losses[1] - 1.0, f"validation loss did not fall: {losses}"
    assert re.search(r"validate step: 30 .*batches: 3 .*tokens: \d+", tiny_run.log_text), (
        "12 valid lines = 3 batches of 4"
    )


def _step_lines(log_text: str) -> dict[int, tuple]:
    return {int(m.group(1)): m.groups() for m in STEP_LINE.finditer(log_text)}


def test_runtime_log_has_lr_throughput_padding_and_no_cpu_mfu(tiny_run):
    lines = _step_lines(tiny_run.log_text)
    assert sorted(lines) == list(range(1, 31)), "every step's metrics line in runtime.log"
    wsds = tiny_run.config["wsds_scheduler"]
    for step, (_, loss, lr, tps, units, padding, skipped, mfu) in lines.items():
        expected_lr = wsds_lr(
            step - 1,
            warmup_steps=wsds["warmup_steps"],
            checkpoints=wsds["checkpoints"],
            lr_max=3e-3,
            lr_min=0.0,
            decay_frac=wsds["decay_frac"],
        )
        assert math.isclose(float(lr), expected_lr, rel_tol=1e-3, abs_tol=1e-9), (
            f"step {step}: lr {lr} vs WSDS {expected_lr}"
        )
        assert float(loss) == round(tiny_run.result.losses[step], 5)
        assert int(tps.replace(",", "")) > 0 and float(units) > 0
        assert 0.0 <= float(padding) < 100.0
        assert int(skipped) == 0, "the fixture has no bad lines"
        assert mfu == "n/a", "no MFU on a CPU"


def test_tensorboard_gets_the_molgen_metrics(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(Path(tiny_run.result.tb_dir).rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard events under {tiny_run.result.tb_dir}"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {
        "lr",
        "throughput(tps)",
        "throughput(units/s)",
        "data/padding_fraction",
        "data/skipped_units",
        "validation_metrics/loss",
    } <= tags
    assert "mfu(%)" not in tags
    lr = {e.step: e.value for e in acc.Scalars("lr")}
    assert lr[11] == 0.0 and lr[21] == 0.0, "train step T + 1 runs optimizer step T at lr_min"
    assert math.isclose(lr[12], 3e-3, rel_tol=1e-6), "back at lr_max right after a decay end"
    padding = [e.value for e in acc.Scalars("data/padding_fraction")]
    assert all(0.0 < p < 1.0 for p in padding), "one ~200-token unit per 256-token row leaves padding"
