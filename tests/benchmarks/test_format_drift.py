"""benchmarks/format_drift.py at test size: noise in written numbers costs local > relative > absolute."""

from __future__ import annotations

import json
import sys

import numpy as np


def test_aligned_rmsd_ignores_rigid_motion_but_not_mirroring(load_benchmark):
    bench = load_benchmark("format_drift")
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(10, 3)) * [3, 2, 1]
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    assert bench.aligned_rmsd(xyz @ q.T + 5.0, xyz) < 1e-9
    assert bench.aligned_rmsd(xyz * [1, 1, -1], xyz) > 0.1  # a proper rotation cannot undo a mirror


def test_the_run_orders_the_formats_by_how_errors_add_up(load_benchmark, fixture_data, tmp_path, monkeypatch):
    bench = load_benchmark("format_drift")
    out = tmp_path / "drift.json"
    argv = ["format_drift.py", "--data", str(fixture_data), "--conformers", "4", "--noise", "0.05", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    assert bench.main() == 0
    result = json.loads(out.read_text())
    mean = {name: result["rmsd"][name]["0.05"]["mean"] for name in ("absolute", "relative", "local")}
    assert 0.0 < mean["absolute"] < mean["relative"] < mean["local"]
    assert result["conformers"] == 4
