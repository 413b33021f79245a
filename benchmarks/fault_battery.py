"""Issue 16's fault battery, end to end on the real `molgen3d` commands, tiny flavor on CPU, in a temporary folder.

Faults are injected the way they happen: a SIGKILL after a training step and 30 ms into a save, a
truncated shard, bytes flipped in place, a deleted `checksums.json`, every step corrupt, two
`evaluate` runs into one folder, bad training lines (BOM, another molecule's coordinates, a
309-digit coordinate, a truncated `.jsonl.gz`, a 5 MB line), `seq_len = 8` and a read-only
checkpoint folder. Each scenario runs the CLI in a subprocess (`python -m molgen3D.cli ...`) and
checks the outcome a user would see: exit code, the message, where training restarted, and the
resumed losses against an uninterrupted run (TensorBoard's float32 values, compared exactly).

Prints one table (scenario, expected, observed, verdict) and writes benchmarks/results/fault_battery.json
with each row's commands, exit codes and output tails. About 3 minutes on the 2-core development machine.
Usage: .venv/bin/python benchmarks/fault_battery.py [--only 1,2,9] [--keep DIR] [--out FILE]
"""

# No `from __future__ import annotations`: tests load this file without registering it in sys.modules
# (`load_benchmark`), and dataclasses would then look string annotations up there.

import argparse
import ast
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import molgen3D
from molgen3D.config.paths import resolve_path
from molgen3D.hf.checkpoint_step import MANIFEST

REPO = Path(__file__).resolve().parents[1]
SRC = Path(molgen3D.__file__).resolve().parents[1]
TINY_TOML = REPO / "tests" / "training" / "fixture_tiny.toml"
STEPS = 12
INTERVAL = 4
"""Saves at steps 4 and 8 (resumable) and 12 (model only, the last save)."""
KILL_AFTER_STEP = 10
LOSS_TAG = "loss_metrics/global_avg_loss"
TAIL = 3000


@dataclass
class Result:
    command: str
    rc: int | None
    out: str
    """stdout, then stderr."""
    seconds: float
    stdout: str = ""

    def evidence(self) -> dict:
        return {
            "command": self.command,
            "rc": self.rc,
            "seconds": round(self.seconds, 1),
            "output_tail": self.out[-TAIL:],
        }


@dataclass
class Row:
    id: str
    scenario: str
    expected: str
    observed: str
    verdict: str
    seconds: float = 0.0
    evidence: list[dict] = field(default_factory=list)


class Checks:
    """What a scenario asserts; each failed one is named in the row's observation."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, what: str, ok: bool) -> bool:
        if not ok:
            self.failed.append(what)
        return ok

    def row(self, id: str, scenario: str, expected: str, observed: str, evidence: list[Result]) -> Row:
        if self.failed:
            observed += " | NOT MET: " + "; ".join(self.failed)
        verdict = "FAIL" if self.failed else "PASS"
        return Row(id, scenario, expected, observed, verdict, evidence=[r.evidence() for r in evidence])


# ---------------------------------------------------------------- fault injection (pure file operations)


def flip_bytes(path: Path, count: int = 8, from_end: int = 4096) -> None:
    """XOR `count` bytes `from_end` bytes before the end of `path`, in place: same size, so only a checksum sees it."""
    data = bytearray(path.read_bytes())
    start = max(0, len(data) - from_end)
    data[start : start + count] = bytes(b ^ 0x5A for b in data[start : start + count])
    path.write_bytes(bytes(data))


def truncate_half(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def shard_of(step_dir: Path) -> Path:
    return sorted(step_dir.glob("*.distcp"))[0]


def lines_mentioning(text: str, needle: str, limit: int = 2) -> str:
    """The first log/console lines holding `needle`, without the log prefix."""
    found = [re.sub(r"^\[titan\].*? - (WARNING|INFO|ERROR) - ", "", line).strip() for line in text.splitlines()]
    return " / ".join([line for line in found if needle in line][:limit])


def start_step(text: str) -> int | None:
    found = re.findall(r"Training starts at step (\d+)", text)
    return int(found[-1]) if found else None


def tb_losses(files: list[Path]) -> dict[int, float]:
    """Training loss per step from TensorBoard event files (float32, as logged)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    losses: dict[int, float] = {}
    for path in files:
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == LOSS_TAG:
                    losses[int(event.step)] = float(
                        value.tensor.float_val[0] if value.tensor.float_val else value.simple_value
                    )
    return losses


def compare_losses(resumed: dict[int, float], reference: dict[int, float], first: int) -> tuple[bool, str]:
    """Resumed steps `first..STEPS` against the uninterrupted run, exactly."""
    wanted = list(range(first, STEPS + 1))
    if sorted(resumed) != wanted:
        return False, f"resumed run logged steps {sorted(resumed)}, expected {wanted}"
    differ = [s for s in wanted if resumed[s] != reference.get(s)]
    if differ:
        pairs = ", ".join(f"{s}: {resumed[s]!r} vs {reference.get(s)!r}" for s in differ[:3])
        return False, f"losses differ at steps {differ} ({pairs})"
    return (
        True,
        f"losses {first}-{STEPS} identical to the uninterrupted run ({len(wanted)}/{len(wanted)} float32 equal)",
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the battery's runs


class Battery:
    """One temporary folder, the compact tokenizer, and an uninterrupted base run the faulty ones are compared with."""

    def __init__(self, work: Path) -> None:
        from molgen3D.tokenization.build import tokenizer_dir_or_build

        self.work = work
        self.ckpts = work / "ckpts"
        self.outputs = work / "outputs"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p),
            "MOLGEN3D_CACHE": str(work / "cache"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "WANDB_MODE": "offline",
        }
        self.tokenizer = tokenizer_dir_or_build("tokenizers:molgen_compact", work / "tokenizers")
        self._base: tuple[Result, dict[int, float]] | None = None
        self._hf: Path | None = None

    # --- commands

    def _cmd(self, args: tuple[str, ...]) -> tuple[list[str], str]:
        return [sys.executable, "-m", "molgen3D.cli", *args], "molgen3d " + " ".join(args)

    def cli(self, *args: str, timeout: float = 600) -> Result:
        cmd, shown = self._cmd(args)
        begin = time.monotonic()
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        return Result(shown, done.returncode, done.stdout + done.stderr, time.monotonic() - begin, done.stdout)

    def start(self, log: Path, *args: str) -> tuple[subprocess.Popen, str]:
        cmd, shown = self._cmd(args)
        with open(log, "w") as sink:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, env=self.env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        return proc, shown

    def pretrain_args(self, run: str, *extra: str) -> tuple[str, ...]:
        return (
            "pretrain",
            "--train-toml",
            str(TINY_TOML),
            "--molgen_run.tokenizer_tag",
            str(self.tokenizer),
            "--job.dump_folder",
            str(self.ckpts),
            "--molgen_run.logs_root",
            str(self.outputs),
            "--molgen_run.run_name",
            run,
            "--training.steps",
            str(STEPS),
            "--wsds_scheduler.checkpoints",
            str(STEPS),
            "--checkpoint.interval",
            str(INTERVAL),
            "--validation.no-enable",
            "--metrics.enable-tensorboard",
            *extra,
        )

    def resume_args(self, run: str) -> tuple[str, ...]:
        return self.pretrain_args(
            run, "--molgen_run.init_mode", "resume", "--molgen_run.resume_run_path_tag", str(self.ckpts / run)
        )

    # --- run folders

    def checkpoint_dir(self, run: str) -> Path:
        return self.ckpts / run / "checkpoint"

    def log_path(self, run: str) -> Path:
        return self.outputs / "pretrain_logs" / run / "runtime.log"

    def tb_files(self, run: str) -> set[Path]:
        return set((self.outputs / "pretrain_logs" / run / "tb").glob("*/events.out.tfevents.*"))

    def base(self) -> tuple[Result, dict[int, float]]:
        """The uninterrupted run (once): its result and losses per step."""
        if self._base is None:
            result = self.cli(*self.pretrain_args("base"))
            if result.rc != 0:
                raise RuntimeError(f"the uninterrupted base run failed (exit {result.rc}):\n{result.out[-TAIL:]}")
            self._base = result, tb_losses(sorted(self.tb_files("base")))
        return self._base

    def seeded_run(self, run: str, steps: tuple[int, ...] = (4, 8)) -> Path:
        """A run folder holding copies of the base run's `steps` (and its run_meta.json); its checkpoint folder."""
        self.base()
        source = self.ckpts / "base"
        target = self.checkpoint_dir(run)
        target.mkdir(parents=True)
        shutil.copy2(source / "run_meta.json", self.ckpts / run / "run_meta.json")
        for step in steps:
            shutil.copytree(source / "checkpoint" / f"step-{step}", target / f"step-{step}")
        return target

    def rerun(self, run: str, args: tuple[str, ...]) -> tuple[Result, str, dict[int, float]]:
        """Run `args` on an existing run: (result, what it added to runtime.log + console, its losses)."""
        log = self.log_path(run)
        offset = log.stat().st_size if log.is_file() else 0
        before = self.tb_files(run)
        result = self.cli(*args)
        added = log.read_text(encoding="utf-8")[offset:] if log.is_file() else ""
        return result, added + "\n" + result.out, tb_losses(sorted(self.tb_files(run) - before))

    def hf_model(self) -> tuple[Path, Result]:
        """The base run's last step exported to an HF folder (the exported-model path of evaluate)."""
        out = self.work / "hf-base"
        result = self.cli(
            "export-hf", "--checkpoint", str(self.checkpoint_dir("base") / f"step-{STEPS}"), "--out", str(out)
        )
        if result.rc != 0:
            raise RuntimeError(f"export of the intact base step failed (exit {result.rc}):\n{result.out[-TAIL:]}")
        return out, result


def wait_until(predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float, every: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(every)
    return False


def kill(proc: subprocess.Popen) -> int:
    os.killpg(proc.pid, signal.SIGKILL)  # the group this battery started for the run
    return proc.wait()


# ---------------------------------------------------------------- scenarios


def kill_during_training(b: Battery) -> list[Row]:
    _, reference = b.base()
    c = Checks()
    console = b.work / "killed.console"
    proc, shown = b.start(console, *b.pretrain_args("killed"))
    log = b.log_path("killed")
    line = re.compile(rf"step:\s+{KILL_AFTER_STEP}\s")
    seen = wait_until(lambda: log.is_file() and bool(line.search(log.read_text(encoding="utf-8"))), proc, 300, 0.01)
    rc = kill(proc) if proc.poll() is None else proc.returncode
    killed = Result(shown, rc, console.read_text(), 0.0)
    c(f"the run reached step {KILL_AFTER_STEP} and was killed (SIGKILL)", seen and rc == -signal.SIGKILL)
    steps = sorted(p.name for p in b.checkpoint_dir("killed").glob("step-*"))
    result, text, losses = b.rerun("killed", b.pretrain_args("killed"))
    first = start_step(text)
    c("the same command exits 0", result.rc == 0)
    c("it resumes at step 9 (from step-8)", first == 9)
    same, how = compare_losses(losses, reference, first or 9)
    c("resumed losses identical", same)
    observed = (
        f"killed after step {KILL_AFTER_STEP} (exit {rc}, left {', '.join(steps)}); "
        f"same command again: exit {result.rc}, starts at step {first}; {how}"
    )
    expected = "rerunning the command resumes at step 9 from step-8; losses 9-12 identical to the uninterrupted run"
    return [c.row("1", "SIGKILL during training (after step 10)", expected, observed, [killed, result])]


def kill_during_save(b: Battery) -> list[Row]:
    _, reference = b.base()
    c = Checks()
    console = b.work / "torn.console"
    proc, shown = b.start(console, *b.pretrain_args("torn"))
    step8 = b.checkpoint_dir("torn") / "step-8"
    saving = wait_until(lambda: step8.is_dir() and any(step8.iterdir()), proc, 300, 0.001)  # its first file
    time.sleep(0.03)
    rc = kill(proc) if proc.poll() is None else proc.returncode
    killed = Result(shown, rc, console.read_text(), 0.0)
    left = sorted(f"{p.name} ({p.stat().st_size} B)" for p in step8.iterdir()) if step8.is_dir() else []
    torn = step8.is_dir() and not (step8 / MANIFEST).is_file()
    c("the kill landed inside the step-8 save (no checksums.json yet)", saving and torn and rc == -signal.SIGKILL)
    result, text, losses = b.rerun("torn", b.resume_args("torn"))
    first = start_step(text)
    reason = lines_mentioning(text, str(step8), 1)
    c("the resume exits 0", result.rc == 0)
    c("step-8 is named with its reason", bool(reason))
    c("it resumes at step 5 (from step-4)", first == 5)
    same, how = compare_losses(losses, reference, first or 5)
    c("resumed losses identical", same)
    observed = (
        f"killed 30 ms after the step-8 save wrote its first file (exit {rc}; step-8 held "
        f"{', '.join(left) or 'nothing'}); "
        f'init_mode = "resume": exit {result.rc}, "{reason}", starts at step {first}; {how}'
    )
    expected = "the torn step-8 is skipped with its reason; resumes at step 5 from step-4 with identical losses"
    return [c.row("2", "SIGKILL 30 ms into a save", expected, observed, [killed, result])]


def _fallback(b: Battery, id: str, scenario: str, run: str, fault: Callable[[Path], str], by_name: bool) -> Row:
    """Steps 4 and 8 of the base run, `fault` applied to step-8, resumed: must restart from step-4."""
    _, reference = b.base()
    c = Checks()
    checkpoint = b.seeded_run(run)
    what = fault(checkpoint / "step-8")
    args = b.pretrain_args(run) if by_name else b.resume_args(run)
    result, text, losses = b.rerun(run, args)
    first = start_step(text)
    reason = lines_mentioning(text, str(checkpoint / "step-8"), 1)
    c("exit 0", result.rc == 0)
    c("step-8 is named with its reason", bool(reason))
    c("it resumes at step 5 (from step-4)", first == 5)
    same, how = compare_losses(losses, reference, first or 5)
    c("resumed losses identical", same)
    how_resumed = "same run name" if by_name else 'init_mode = "resume"'
    observed = f'{what}; {how_resumed}: exit {result.rc}, "{reason}", starts at step {first}; {how}'
    expected = "step-8 skipped naming its bad file; resumes at step 5 from step-4"
    return c.row(id, scenario, expected, observed, [result])


def truncated_newest(b: Battery) -> list[Row]:
    def fault(step: Path) -> str:
        truncate_half(shard_of(step))
        return f"{shard_of(step).name} of step-8 cut to half"

    return [_fallback(b, "3", "newest step truncated", "trunc", fault, by_name=True)]


def corrupted_newest(b: Battery) -> list[Row]:
    def fault(step: Path) -> str:
        flip_bytes(shard_of(step))
        return f"8 bytes of step-8's {shard_of(step).name} XORed in place (same size)"

    return [_fallback(b, "4", "newest step corrupted in place", "flipped", fault, by_name=False)]


def missing_checksums(b: Battery) -> list[Row]:
    def fault(step: Path) -> str:
        (step / MANIFEST).unlink()
        flip_bytes(shard_of(step))
        return f"step-8's {MANIFEST} deleted and 8 bytes of its shard flipped"

    rows = [_fallback(b, "5a", "newest step without checksums.json, older verified step", "nosum", fault, False)]
    rows[0].expected = "the verified step-4 is preferred over the unverified step-8 (named); resumes at step 5"

    _, reference = b.base()
    c = Checks()
    checkpoint = b.seeded_run("nosum-only", steps=(8,))
    (checkpoint / "step-8" / MANIFEST).unlink()
    result, text, losses = b.rerun("nosum-only", b.resume_args("nosum-only"))
    first = start_step(text)
    warning = lines_mentioning(text, "UNVERIFIED", 1)
    c("exit 0", result.rc == 0)
    c("an UNVERIFIED warning naming step-8", str(checkpoint / "step-8") in warning)
    c("it resumes at step 9 (from step-8)", first == 9)
    same, how = compare_losses(losses, reference, first or 9)
    c("resumed losses identical", same)
    observed = (
        f'only step-8, its {MANIFEST} deleted; resume: exit {result.rc}, "{warning}", starts at step {first}; {how}'
    )
    rows.append(
        c.row(
            "5b",
            "only step without checksums.json",
            "loaded, with a warning naming it UNVERIFIED",
            observed,
            [result],
        )
    )
    return rows


def every_step_corrupt(b: Battery) -> list[Row]:
    rows = []
    for id, how, run in (("6a", 'init_mode = "resume"', "allbad"), ("6b", "same run name (scratch)", "allbad-name")):
        c = Checks()
        checkpoint = b.seeded_run(run)
        shards = {}
        for step in (4, 8):
            shards[step] = shard_of(checkpoint / f"step-{step}")
            flip_bytes(shards[step])
        args = b.resume_args(run) if id == "6a" else b.pretrain_args(run)
        result, text, _ = b.rerun(run, args)
        named = all(f"step-{s}: {shard} content changed" in result.out for s, shard in shards.items())
        c("exits non-zero (2: config error / 1: resume error)", result.rc == (2 if id == "6a" else 1))
        c("each step named with its bad file", named)
        c("says how to start afresh on purpose", "afresh" in result.out)
        c("no training step ran", "Training starts" not in text)
        c("no traceback", "Traceback" not in result.out)
        message = lines_mentioning(result.out, "cannot", 1)
        observed = f'steps 4 and 8 both flipped; {how}: exit {result.rc}, "{message}", each step named: {named}'
        expected = "stops before training with an error naming each step and its bad file, and how to start afresh"
        rows.append(c.row(id, f"every step corrupt, {how}", expected, observed, [result]))
    return rows


def refuse_corrupt_step(b: Battery) -> list[Row]:
    checkpoint = b.seeded_run("badexport", steps=(8,))
    shard = shard_of(checkpoint / "step-8")
    flip_bytes(shard)
    rows = []
    c = Checks()
    out = b.work / "badexport-hf"
    result = b.cli("export-hf", "--checkpoint", str(checkpoint / "step-8"), "--out", str(out))
    c("exit 1", result.rc == 1)
    c("names the bad file", f"{shard} content changed" in result.out)
    c("no weights written", not (out / "model.safetensors").exists())
    c("no traceback", "Traceback" not in result.out)
    message = lines_mentioning(result.out, "refusing", 1)[:240]
    rows.append(
        c.row(
            "7a",
            "export-hf on a corrupt step",
            "refused, naming the bad file",
            f'exit {result.rc}: "{message}"',
            [result],
        )
    )

    c = Checks()
    smiles = b.work / "one.smi"
    smiles.write_text("CC(C)(C)c1ccc(NNC(=O)C2CCC2)cc1 mol1\n")
    samples = b.work / "badstep.sdf"
    result = b.cli(
        "generate",
        "--model",
        str(checkpoint / "step-8"),
        "--smiles",
        str(smiles),
        "--out",
        str(samples),
        "--no-progress",
    )
    c("exit non-zero", result.rc not in (0, None))
    c("names the bad file", f"{shard} content changed" in result.out)
    c("nothing sampled", not samples.exists())
    c("no traceback", "Traceback" not in result.out)
    message = lines_mentioning(result.out, "refusing", 1)[:240]
    rows.append(
        c.row(
            "7b",
            "generate --model <corrupt step>",
            "refused, naming the bad file; nothing sampled",
            f'exit {result.rc}: "{message}"',
            [result],
        )
    )
    return rows


def evaluate_folder(b: Battery) -> list[Row]:
    from molgen3D.evaluation.folder_owner import OWNER_FILE

    model, exported = b.hf_model()
    out = b.work / "eval"
    args = (
        "evaluate",
        "--model",
        str(model),
        "--references",
        str(resolve_path("data:fixture_test")),
        "--out",
        str(out),
        "--no-progress",
        "--rmsd-workers",
        "1",
        "--posebusters",
        "none",
        "--threads",
        "1",
    )
    c = Checks()
    console = b.work / "eval-first.console"
    first, shown = b.start(console, *args)
    holding = wait_until((out / OWNER_FILE).is_file, first, 120, 0.01)
    second = b.cli(*args)
    first_alive = first.poll() is None
    first_rc = first.wait(timeout=600)
    first_result = Result(shown, first_rc, console.read_text(), 0.0)
    c("the first run held the folder while the second started", holding and first_alive)
    c("the second exits 1", second.rc == 1)
    c("the second names the first's pid and says in use", f"pid {first.pid}" in second.out and "in use" in second.out)
    c("the first exits 0 with its metrics", first_rc == 0 and (out / "metrics.json").is_file())
    c("no traceback", "Traceback" not in second.out)
    message = lines_mentioning(second.out, "in use", 1)[:220]
    observed = (
        f'second started while the first (pid {first.pid}) ran: exit {second.rc}, "{message}"; first: exit {first_rc}'
    )
    rows = [
        c.row(
            "8a",
            "two evaluate runs into one --out",
            "the second stops at once naming the first; the first finishes",
            observed,
            [exported, first_result, second],
        )
    ]

    c = Checks()
    before = snapshot(out)
    third = b.cli(*args)
    c("exit 1", third.rc == 1)
    c("says earlier evaluation and --overwrite", "earlier evaluation" in third.out and "--overwrite" in third.out)
    c("nothing deleted or changed", snapshot(out) == before)
    c("no traceback", "Traceback" not in third.out)
    message = lines_mentioning(third.out, "earlier evaluation", 1)[:220]
    rows.append(
        c.row(
            "8b",
            "evaluate without --resume into an earlier evaluation",
            "refused without --overwrite; the folder untouched",
            f'exit {third.rc}: "{message}"; folder unchanged: {snapshot(out) == before}',
            [third],
        )
    )
    return rows


def _fixture_lines() -> list[str]:
    from molgen3D.datasets.jsonl_paths import expand_paths

    return [
        line
        for f in expand_paths(str(resolve_path("data:fixture_train")))
        for line in f.read_text().splitlines()
        if line
    ]


def _other_molecules_coordinates(lines: list[str]) -> str:
    """A line whose SMILES is one molecule and whose coordinates belong to another with as many heavy atoms."""
    from rdkit import Chem

    by_count: dict[int, dict] = {}
    for line in lines:
        unit = json.loads(line)
        n = Chem.MolFromSmiles(unit["canonical_smiles"]).GetNumAtoms()
        other = by_count.get(n)
        if other is not None and other["canonical_smiles"] != unit["canonical_smiles"]:
            return json.dumps(
                {"canonical_smiles": unit["canonical_smiles"], "embedded_smiles": other["embedded_smiles"]}
            )
        by_count[n] = unit
    raise RuntimeError("the fixture has no two molecules with the same heavy-atom count")


def _huge_coordinate(line: str) -> str:
    unit = json.loads(line)
    unit["embedded_smiles"] = re.sub(r"<-?\d+", "<" + "9" * 309, unit["embedded_smiles"], count=1)
    return json.dumps(unit)


def _pack_stats(b: Battery, data: Path) -> tuple[dict, Result]:
    result = b.cli(
        "pack-stats", "--data", str(data), "--tokenizer", str(b.tokenizer), "--seq-len", "2048",
        "--batches", "100000", "--json-out",
    )  # fmt: skip
    if result.rc != 0:
        raise RuntimeError(f"pack-stats failed (exit {result.rc}):\n{result.out[-TAIL:]}")
    return json.loads(result.stdout), result


def training_data(b: Battery) -> list[Row]:
    lines = _fixture_lines()
    mid = len(lines) // 2
    faults = {
        "smiles_mismatch": _other_molecules_coordinates(lines),
        "coordinate_out_of_range": _huge_coordinate(lines[0]),
        "line_too_long": json.dumps({**json.loads(lines[1]), "name": "x" * 5_000_000}),
    }
    clean, bad = b.work / "data-clean", b.work / "data-bad"
    clean.mkdir()
    bad.mkdir()
    (clean / "part-00000.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    faulty = [*lines[:mid], *faults.values(), *lines[mid:]]
    (bad / "part-00000.jsonl").write_text("\ufeff" + "\n".join(faulty) + "\n", encoding="utf-8")
    reference, clean_run = _pack_stats(b, clean)
    stats, bad_run = _pack_stats(b, bad)
    skipped = stats["skipped"]
    rows = []
    evidence = [clean_run, bad_run]

    c = Checks()
    c("the BOM line is trained on (not bad_json)", "bad_json" not in skipped)
    c("every good line packed", stats["units"] == reference["units"])
    c("no other skip", sum(skipped.values()) == len(faults))
    observed = f"units packed {stats['units']} (clean file: {reference['units']}); skipped {skipped}"
    rows.append(
        c.row("9a", "UTF-8 BOM before the first (valid) line", "the first line is trained on", observed, evidence)
    )
    for id, scenario, reason in (
        ("9b", "a line with another molecule's coordinates", "smiles_mismatch"),
        ("9c", "a 309-digit coordinate", "coordinate_out_of_range"),
        ("9e", "a 5 MB line", "line_too_long"),
    ):
        c = Checks()
        c(f"counted once as {reason}", skipped.get(reason) == 1)
        example = " ".join(str(e) for e in stats["skip_examples"].get(reason, []))[:160]
        rows.append(
            c.row(
                id, scenario, f"skipped, counted as {reason}", f"{reason}: {skipped.get(reason)} ({example})", evidence
            )
        )

    c = Checks()
    gz = b.work / "data-gz"
    gz.mkdir()
    whole = gzip.compress(("\n".join(lines) + "\n").encode())
    shard = gz / "part-00000.jsonl.gz"
    shard.write_bytes(whole[: len(whole) // 2])
    result = b.cli(*b.pretrain_args("gz", "--training.dataset_path", str(gz), "--checkpoint.no-enable"))
    c("exit 2 (config error)", result.rc == 2)
    c(
        "names the shard and [training] dataset_path",
        str(shard) in result.out and "[training] dataset_path" in result.out,
    )
    c("before the Trainer starts", "Training starts" not in result.out and not b.log_path("gz").exists())
    c("no traceback", "Traceback" not in result.out)
    message = lines_mentioning(result.out, "config error", 1)[:240]
    rows.append(
        c.row(
            "9d",
            "a truncated .jsonl.gz shard",
            "pre-flight error naming the shard",
            f'exit {result.rc}: "{message}"',
            [result],
        )
    )

    c = Checks()
    run = b.cli(
        *b.pretrain_args(
            "badlines", "--training.dataset_path", str(bad), "--checkpoint.no-enable", "--training.seq_len", "2048",
            "--training.steps", "3", "--wsds_scheduler.checkpoints", "3", "--wsds_scheduler.warmup_steps", "1",
            "--lr_scheduler.warmup_steps", "1",
        )
    )  # fmt: skip
    text = b.log_path("badlines").read_text(encoding="utf-8") if b.log_path("badlines").is_file() else run.out
    epoch = re.search(r"finished epoch 0 of .*?(\{.*\})", text)
    counts = (
        {k: v for k, v in ast.literal_eval(epoch.group(1)).items() if k.startswith("skipped/") and v} if epoch else {}
    )
    console = [int(n) for n in re.findall(r"step:\s+\d+\s.*?skipped: (\d+)", text)]
    wanted = {f"skipped/{reason}": 1 for reason in faults}
    c("exit 0", run.rc == 0)
    c("the first pass over the file skipped each bad line once, by reason", counts == wanted)
    c("the console's step lines count them", bool(console) and console[-1] >= len(faults))
    observed = (
        f"3 steps of seq_len 2048 on the faulty file: exit {run.rc}; first pass skipped {counts or '?'}; "
        f"console skipped: {console}"
    )
    rows.append(
        c.row(
            "9f",
            "training on those lines",
            "the loader skips each bad line by reason; the console counts them",
            observed,
            [run],
        )
    )
    return rows


def seq_len_8(b: Battery) -> list[Row]:
    c = Checks()
    result = b.cli(*b.pretrain_args("seq8", "--training.seq_len", "8", "--checkpoint.no-enable"))
    c("exit 2 (config error)", result.rc == 2)
    c("names [training] seq_len", "[training] seq_len" in result.out)
    c("no training step ran", "Training starts" not in result.out and not b.log_path("seq8").exists())
    c("no traceback", "Traceback" not in result.out)
    message = lines_mentioning(result.out, "seq_len", 1)[:260]
    return [
        c.row(
            "10", "seq_len = 8", "refused before training, naming the key", f'exit {result.rc}: "{message}"', [result]
        )
    ]


def _make_read_only(folder: Path) -> Callable[[], None] | None:
    """Make `folder` refuse new files (chmod; as root, the immutable attribute): the undo, or None if impossible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        return None
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def read_only_checkpoints(b: Battery) -> list[Row]:
    folder = b.checkpoint_dir("readonly")
    folder.mkdir(parents=True)
    undo = _make_read_only(folder)
    expected = "refused before training with a message naming the folder and the fix"
    if undo is None:
        return [Row("11", "read-only checkpoint folder", expected, "could not make a folder read-only here", "SKIP")]
    try:
        c = Checks()
        result = b.cli(*b.pretrain_args("readonly"))
    finally:
        undo()
    c("exit 1", result.rc == 1)
    c("names the folder", f"cannot write checkpoints into {folder}" in result.out)
    c("says how to fix it", "writable" in result.out)
    c("no traceback", "Traceback" not in result.out)
    message = lines_mentioning(result.out, "cannot write", 1)[:260]
    return [c.row("11", "read-only checkpoint folder", expected, f'exit {result.rc}: "{message}"', [result])]


SCENARIOS: dict[str, Callable[[Battery], list[Row]]] = {
    "1": kill_during_training,
    "2": kill_during_save,
    "3": truncated_newest,
    "4": corrupted_newest,
    "5": missing_checksums,
    "6": every_step_corrupt,
    "7": refuse_corrupt_step,
    "8": evaluate_folder,
    "9": training_data,
    "10": seq_len_8,
    "11": read_only_checkpoints,
}


def run_battery(ids: list[str], work: Path) -> list[Row]:
    """The scenarios `ids` in `work`; a scenario that raises is one FAIL row with the error."""
    battery = Battery(work)
    rows: list[Row] = []
    for id in ids:
        begin = time.monotonic()
        try:
            found = SCENARIOS[id](battery)
        except Exception as err:  # a broken scenario is reported, the others still run
            found = [Row(id, SCENARIOS[id].__name__, "", f"{type(err).__name__}: {err}"[-TAIL:], "FAIL")]
        seconds = (time.monotonic() - begin) / len(found)
        for row in found:
            row.seconds = round(seconds, 1)
        rows += found
        print(f"  {id}: " + ", ".join(f"{r.id} {r.verdict}" for r in found), file=sys.stderr, flush=True)
    return rows


def format_table(rows: list[Row]) -> str:
    lines = ["| # | scenario | expected | observed | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [r.id, r.scenario, r.expected, r.observed, r.verdict]
        lines.append("| " + " | ".join(str(x).replace("|", "/").replace("\n", " ") for x in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma list of scenario numbers (default: all)")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it, instead of a temporary one")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fault_battery.json")
    args = parser.parse_args(argv)
    ids = [i.strip() for i in args.only.split(",") if i.strip()]
    unknown = [i for i in ids if i not in SCENARIOS]
    if unknown:
        parser.error(f"--only: no scenario {', '.join(unknown)} (there are {', '.join(SCENARIOS)})")
    begin = time.monotonic()
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        rows = run_battery(ids, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="fault-battery-") as tmp:
            rows = run_battery(ids, Path(tmp))
    seconds = time.monotonic() - begin
    print(format_table(rows))
    counts = {v: sum(r.verdict == v for r in rows) for v in ("PASS", "FAIL", "SKIP")}
    print(", ".join(f"{n} {v}" for v, n in counts.items() if n) + f" of {len(rows)} in {seconds:.0f} s")
    for r in rows:
        if r.verdict == "FAIL":
            for e in r.evidence:
                print(f"\n--- {r.id}: {e['command']} (exit {e['rc']})\n{e['output_tail']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"seconds": round(seconds, 1), "cpus": os.cpu_count(), "rows": [asdict(r) for r in rows]}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
