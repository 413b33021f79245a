"""An evaluation folder belongs to one run; scoring options are checked with the user's names; skips are shown."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from molgen3D.evaluation import evaluate as evaluate_module
from molgen3D.evaluation import rescore as rescore_module
from molgen3D.evaluation import score_run as score_run_module
from molgen3D.evaluation.folder_owner import OWNER_FILE
from molgen3D.scoring.options import ScoringOptions

from .helpers import fixture_lines

ETKDG = ["--baseline", "etkdg", "--max-molecules", "1", "--max-conformers", "1", "--no-progress"]
QUICK = ["--rmsd-workers", "1", "--posebusters", "none"]


def _evaluate(references, out, *extra):
    return evaluate_module.cli(["--references", str(references), "--out", str(out), *ETKDG, *QUICK, *extra])


@pytest.fixture(scope="module")
def scored(tmp_path_factory, fixture_data):
    out = tmp_path_factory.mktemp("owned") / "eval"
    assert _evaluate(fixture_data / "test", out) == 0
    return out


def _owner(folder, pid, host=None):
    record = {"command": "molgen3d evaluate", "pid": pid, "host": host or socket.gethostname(), "started": time.time()}
    (folder / OWNER_FILE).write_text(json.dumps(record))


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_in_use_stops_a_second_evaluate_and_rescore_naming_the_process(scored, fixture_data, capsys):
    before = _snapshot(scored)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _owner(scored, other.pid)
        assert _evaluate(fixture_data / "test", scored, "--resume") == 1
        err = capsys.readouterr().err
        assert f"pid {other.pid}" in err and "in use" in err and "molgen3d evaluate" in err
        assert rescore_module.cli([str(scored), *QUICK]) == 1
        assert f"pid {other.pid}" in capsys.readouterr().err
        after = _snapshot(scored)
        assert after.pop(scored.joinpath(OWNER_FILE).relative_to(scored)) and after == before  # untouched
    finally:
        other.kill()
        other.wait()
        (scored / OWNER_FILE).unlink(missing_ok=True)


def test_a_record_left_by_a_dead_process_is_taken_over_and_released(scored, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _owner(scored, gone.pid)
    assert rescore_module.cli([str(scored), *QUICK]) == 0
    assert not (scored / OWNER_FILE).exists()  # released when the command ended
    assert not [p for p in scored.rglob("*") if p.name.endswith(".tmp") or ".claim-" in p.name]


def test_an_earlier_evaluation_is_replaced_only_when_asked(scored, fixture_data, capsys):
    before = _snapshot(scored)
    assert _evaluate(fixture_data / "test", scored) == 1
    err = capsys.readouterr().err
    assert "earlier evaluation" in err and "--resume" in err and "--overwrite" in err
    assert _snapshot(scored) == before  # nothing deleted
    with pytest.raises(SystemExit):
        _evaluate(fixture_data / "test", scored, "--resume", "--overwrite")
    assert _evaluate(fixture_data / "test", scored, "--overwrite", "--etkdg-seed", "7") == 0
    assert json.loads((scored / "run.json").read_text())["identity"]["etkdg_seed"] == 7


@pytest.mark.parametrize(
    "option, value", [("--max-matches", "0"), ("--rmsd-workers", "0"), ("--pair-timeout", "-1"), ("--threshold", "0")]
)
def test_scoring_options_are_checked_with_the_users_names_even_with_cached_rmsds(scored, option, value, capsys):
    before = _snapshot(scored)
    args = {"--rmsd-workers": "1", "--posebusters": "none", option: value}
    with pytest.raises(SystemExit) as stop:
        rescore_module.cli([str(scored), *(x for kv in args.items() for x in kv)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert option in err and value in err and "pair_timeout_s" not in err
    assert _snapshot(scored) == before
    with pytest.raises(SystemExit):
        evaluate_module.cli(["--references", "x", "--out", "y", "--baseline", "etkdg", option, value])


def test_the_rmsd_cache_is_written_whole(scored, monkeypatch):
    cache = scored / "rmsd" / "etkdg.npz"
    good = cache.read_bytes()
    cache.unlink()

    def dies_half_way(file, **arrays):
        target = open(file, "wb") if isinstance(file, (str, os.PathLike)) else file
        target.write(b"PK\x03\x04 half an archive")
        target.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        score_run_module.score_run(scored, ScoringOptions(rmsd_workers=1, posebusters="none"))
    assert not cache.exists() and not list(cache.parent.glob("*.tmp"))
    monkeypatch.undo()
    assert rescore_module.cli([str(scored), *QUICK]) == 0
    with np.load(cache) as new, np.load(io.BytesIO(good)) as old:
        assert np.array_equal(new["m0"], old["m0"], equal_nan=True)


def test_skipped_reference_records_are_printed(tmp_path, fixture_data, capsys):
    lines = fixture_lines(fixture_data, "test")[:2]
    references = tmp_path / "refs.jsonl"
    references.write_text("".join(json.dumps(x) + "\n" for x in lines) + "{not json\n")
    assert _evaluate(references, tmp_path / "e") == 0
    out = capsys.readouterr().out
    assert "references skipped (bad_json): 1 line" in out and f"{references}:3" in out
