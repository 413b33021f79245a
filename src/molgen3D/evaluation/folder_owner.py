"""One command at a time in an evaluation folder: `owner.json` names the process that works in it.

Two `evaluate`/`rescore` runs writing one folder interleave their samples and metrics and
both exit 0, so the second one stops before it touches anything. The record is created whole
(written to a temporary file, then hard-linked into place, which fails when one exists) and
removed when the command ends; a record whose process is gone on this host is stale and taken over.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from molgen3D.files import atomic_output

OWNER_FILE = "owner.json"


class FolderInUseError(ValueError):
    """Another live process works in the folder; the message names it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(owner: dict) -> str:
    started = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if isinstance(started, (int, float)) else "?"
    return f"`{owner.get('command', '?')}` (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {when})"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _stale(owner: dict) -> bool:
    """Only a record of this host whose process is gone is known to be stale."""
    return owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) and not _alive(owner["pid"])


@contextmanager
def owned(folder: Path, command: str) -> Iterator[dict]:
    """Hold `folder` for this process while the block runs; `FolderInUseError` when another live process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / OWNER_FILE
    me = {"command": command, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    me["argv"] = sys.argv
    claim = folder / f".{OWNER_FILE}.claim-{os.getpid()}"
    for _ in range(3):
        with atomic_output(claim) as f:
            f.write(json.dumps(me, indent=2) + "\n")
        try:
            os.link(claim, path)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            owner = _read(path)
            if owner is None:
                continue  # released between our try and the read
            if owner and _stale(owner):
                path.unlink(missing_ok=True)
                continue
            raise FolderInUseError(
                f"{folder} is in use by {_describe(owner)}; wait for it to end or use another folder "
                f"(if that process is gone, delete {path})"
            ) from None
        finally:
            claim.unlink(missing_ok=True)
        break
    else:
        raise FolderInUseError(f"{folder}: could not take {path} (another process keeps replacing it)")
    try:
        yield me
    finally:
        if (_read(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
