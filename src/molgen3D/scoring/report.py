"""What a user reads of an evaluation: JSON-safe metrics and the tables (scores, chemistry, PoseBusters, failures)."""

from __future__ import annotations

import math

import numpy as np


def json_safe(value):
    """JSON-safe: NaN/inf -> None, numpy scalars and arrays -> Python."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ang(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = (cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
        lines.append("  ".join(cells))
        if k == 0:
            lines.append("-" * len(lines[-1]))
    return lines


def _num(x, fmt: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def format_table(metrics: dict) -> str:
    """The tables a user reads: GEOM scores, chemistry checks, PoseBusters per check, then what failed."""
    t = metrics["threshold"]
    rows = [["method", "validity", "samples/s", "COV-R", "MAT-R (A)", "COV-P", "MAT-P (A)"]]
    for name, r in metrics["methods"].items():
        agg, sps = r["aggregate"], r["samples_per_second"]
        rows.append(
            [
                name,
                _pct(r["validity"]),
                _num(sps, ".2f"),
                *(
                    f"{fmt(agg[k]['mean'])} / {fmt(agg[k]['median'])}"
                    for k, fmt in (("cov_r", _pct), ("mat_r", _ang), ("cov_p", _pct), ("mat_p", _ang))
                ),
            ]
        )
    lines = [
        f"{metrics['num_molecules']} molecules, {metrics['reference_conformers']} reference conformers, "
        f"K = {metrics['samples_per_reference']}L; COV at RMSD < {t} A; cells are mean / median over molecules",
        *_grid(rows),
        "",
        "chemistry of valid samples (heavy atoms; deviations from the mean over the molecule's references)",
    ]
    rows = [
        [
            "method",
            "stereo OK",
            "bond MAE (A)",
            "ring-closure bond MAE",
            "angle MAE (deg)",
            "clash-free",
            "clashes/sample",
        ]
    ]
    for name, r in metrics["methods"].items():
        c = r["chemistry"]
        rows.append(
            [
                name,
                f"{_pct(c['stereo_ok'])} of {c['stereo_checked']}",
                _num(c["bond_length_mae"], ".3f"),
                _num(c.get("ring_closure_bond_mae", float("nan")), ".3f"),
                _num(c["bond_angle_mae"], ".2f"),
                _pct(c["clash_free"]),
                _num(c["clashes_per_sample"], ".2f"),
            ]
        )
    lines += _grid(rows)
    pb = metrics["posebusters"]
    if pb["available"]:
        names = list(pb["methods"])
        checks = list(dict.fromkeys(k for m in pb["methods"].values() for k in m["checks"]))
        rows = [[f"PoseBusters `{pb['config']}`", *(f"{n} ({pb['methods'][n]['samples']})" for n in names)]]
        for check in checks:
            cells = []
            for n in names:
                entry = pb["methods"][n]["checks"].get(check)
                cell = "n/a" if entry is None else _pct(entry["pass_rate"])
                if entry is not None and entry["not_run"]:
                    cell += f" ({entry['not_run']} not run)"
                cells.append(cell)
            rows.append([check, *cells])
        rows.append(["all checks pass", *(_pct(pb["methods"][n]["all_pass"]) for n in names)])
        lines += ["", *_grid(rows)]
    else:
        lines.append(f"PoseBusters: {pb['note']}")
    for name, r in metrics["methods"].items():
        for reason, entry in r["failures"].items():
            lines.append(f"  {name} failed {reason}: {entry['count']} (e.g. {entry['examples'][0][:80]})")
        for reason, entry in r.get("samples_unused", {}).items():
            lines.append(f"  {name} samples left out ({reason}): {entry['count']} (e.g. {entry['examples'][0]})")
        if r["rmsd"]["timeouts"] or r["rmsd"]["errors"]:
            lines.append(f"  {name} RMSD: {r['rmsd']['timeouts']} time-outs, errors {r['rmsd']['errors']}")
    for reason, entry in metrics.get("references_skipped", {}).items():
        example = entry["examples"][0] if entry["examples"] else ""
        lines.append(f"  references skipped ({reason}): {entry['count']} {entry['unit']}(s) (e.g. {example[:100]})")
    lines.append(f"plot: {metrics['plot']}")
    return "\n".join(lines)
