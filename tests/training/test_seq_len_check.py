"""`[training] seq_len` against the units: refused when many would be cut, warned when a few, shown in the log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from molgen3D.training.pretraining import torchtitan_runner as runner
from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
from molgen3D.training.pretraining.config.loading import load_job_config
from molgen3D.training.pretraining.seq_len_check import REFUSE_SHARE, estimate

FIXTURE_TRAIN = Path(__file__).resolve().parents[1] / "fixtures" / "conformers" / "train"


@pytest.fixture(scope="module")
def fixture_lengths(compact_tokenizer) -> list[int]:
    """Token counts of every fixture training unit, encoded here as the loader does (no special tokens)."""
    from molgen3D.tokenization.stats import read_units

    return [len(compact_tokenizer.encode(unit, add_special_tokens=False)) for unit in read_units(FIXTURE_TRAIN)]


def _check(toml: Path) -> list[str]:
    cfg = load_job_config(toml)
    return runner.check_inputs(cfg, cfg.molgen_resolved.paths)


def test_estimate_counts_the_units_without_room_for_their_separator():
    found = estimate([3, 9, 10, 4], seq_len=10)
    assert (found.units, found.over, found.longest, found.p99) == (4, 1, 10, 10)
    assert found.share == 0.25 and estimate([], 10).share == 0.0


def test_a_seq_len_that_cuts_most_units_is_refused_naming_the_key_share_and_a_length_that_fits(
    make_tiny_toml, fixture_lengths
):
    toml = make_tiny_toml("short", training={"seq_len": 8})
    with pytest.raises(MolGenConfigError) as info:
        _check(toml)
    ordered = sorted(fixture_lengths)
    p99 = ordered[-(-99 * len(ordered) // 100) - 1]
    line = toml.read_text().splitlines().index("seq_len = 8") + 1
    text = str(info.value)
    assert info.value.key == "training.seq_len" and text.startswith(f"[training] seq_len ({toml}:{line}): ")
    assert f"100.0% of {len(ordered)} sampled training units" in text and "truncated" in text
    assert f"set seq_len = {p99 + 1} or more" in text and f"{ordered[-1] + 1} fits all" in text


def test_the_command_stops_before_training(make_tiny_toml, capsys):
    toml = make_tiny_toml("short-cli", training={"seq_len": 8})
    assert runner.cli(["--train-toml", str(toml)]) == 2
    assert "[training] seq_len" in capsys.readouterr().err


def test_a_small_share_is_a_warning_and_none_is_silent(make_tiny_toml, fixture_lengths):
    over = sum(n > 255 for n in fixture_lengths)
    assert 0 < over / len(fixture_lengths) <= REFUSE_SHARE, "the fixture has a few units above 255 tokens"
    (warning,) = _check(make_tiny_toml("fits-most", training={"seq_len": 256}))
    assert warning.startswith("[training] seq_len = 256: ")
    assert f"{over / len(fixture_lengths):.1%} of {len(fixture_lengths)} sampled training units ({over})" in warning
    roomy = max(fixture_lengths) + 1
    assert _check(make_tiny_toml("fits-all", training={"seq_len": roomy})) == []


def test_dropped_units_are_named_as_dropped(make_tiny_toml):
    toml = make_tiny_toml("short-drop", training={"seq_len": 8}, molgen_data={"truncate_overflow_units": False})
    with pytest.raises(MolGenConfigError, match="would be dropped"):
        _check(toml)


@pytest.mark.slow
def test_the_run_log_shows_the_warning_and_the_truncated_count_on_every_step_line(tiny_run, fixture_lengths):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    over = sum(n > tiny_run.config["training"]["seq_len"] - 1 for n in fixture_lengths)
    assert f"sampled training units ({over}) are longer than seq_len - 1" in tiny_run.log_text
    counts = {int(s): int(n) for s, n in re.findall(r"step:\s+(\d+)\s.*?truncated: (\d+)", tiny_run.log_text)}
    assert sorted(counts) == list(range(1, 31)), "every step line shows the truncated units"
    events = sorted(Path(tiny_run.result.tb_dir).rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    board = {e.step: int(e.value) for e in acc.Scalars("data/truncated_units")}
    assert counts == board, "the console shows what TensorBoard gets"
