"""benchmarks/fault_battery.py: its fault injections and verdicts on made-up inputs, and the fast scenarios (no
training run: bad training data, seq_len = 8, a read-only checkpoint folder) through the script's own functions."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def battery(load_benchmark):
    return load_benchmark("fault_battery")


def test_flipped_bytes_keep_the_size_and_change_the_content(battery, tmp_path):
    shard = tmp_path / "__0_0.distcp"
    original = bytes(range(256)) * 40
    shard.write_bytes(original)
    battery.flip_bytes(shard)
    flipped = shard.read_bytes()
    assert len(flipped) == len(original) and flipped != original
    assert sum(a != b for a, b in zip(flipped, original)) == 8
    battery.truncate_half(shard)
    assert shard.stat().st_size == len(original) // 2


def test_resumed_losses_must_cover_every_step_and_match_exactly(battery):
    reference = {s: 10.0 - s / 7 for s in range(1, battery.STEPS + 1)}
    resumed = {s: reference[s] for s in range(9, battery.STEPS + 1)}
    assert battery.compare_losses(resumed, reference, 9)[0]
    assert not battery.compare_losses(resumed, reference, 5)[0], "steps 5-8 missing"
    off = {**resumed, 10: reference[10] + 1e-6}
    same, how = battery.compare_losses(off, reference, 9)
    assert not same and "[10]" in how


def test_a_failed_check_makes_the_row_fail_and_names_it(battery):
    checks = battery.Checks()
    checks("exit 0", True)
    checks("names the folder", False)
    row = checks.row("11", "read-only", "refused", "exit 1", [])
    assert row.verdict == "FAIL" and "NOT MET: names the folder" in row.observed
    good = battery.Checks()
    good("exit 0", True)
    assert good.row("10", "s", "e", "o", []).verdict == "PASS"
    table = battery.format_table([row])
    assert table.splitlines()[2].startswith("| 11 | read-only |") and table.rstrip().endswith("| FAIL |")


def test_log_helpers(battery):
    text = "\n".join(
        [
            "[titan] 2026-12-04 22:34:27,980 - root - WARNING - Ignoring incomplete checkpoint /x/step-8: no .metadata",
            "[titan] 2026-12-04 22:34:28,000 - root - INFO - Training starts at step 5",
        ]
    )
    assert battery.start_step(text) == 5 and battery.start_step("nothing") is None
    assert battery.lines_mentioning(text, "/x/step-8") == "Ignoring incomplete checkpoint /x/step-8: no .metadata"


@pytest.mark.slow
def test_the_fast_scenarios_pass_on_the_real_commands(battery, tmp_path):
    """Bad training data (pack-stats, a gzip pre-flight, 3 training steps), seq_len = 8, a read-only folder."""
    out = tmp_path / "battery.json"
    code = battery.main(["--only", "9,10,11", "--keep", str(tmp_path / "work"), "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["id"] for r in rows] == ["9a", "9b", "9c", "9e", "9d", "9f", "10", "11"]
    failed = {r["id"]: r["observed"] for r in rows if r["verdict"] not in ("PASS", "SKIP")}
    assert not failed and code == 0, failed
    seq = next(r for r in rows if r["id"] == "10")
    assert "[training] seq_len" in seq["observed"] and seq["evidence"][0]["rc"] == 2
