"""Where a prepared data set's `manifest.json` is: one rule for everything that reads it.

`prepare-data` writes the manifest into the data set root, beside `train/ valid/ test/`. A path
into a data set (the root, a split folder, a shard file or a glob of shards) finds it in its own
folder or the one above; the split is the folder's name when the manifest is one level up.
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"


def find_manifest(path: str | Path) -> tuple[Path, str | None] | None:
    """(manifest path, split name or None at the root) for a path into a data set, or None when there is none.

    A directory is looked in and then its parent; anything else (a file, a glob) starts at its folder.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    for candidate, split in ((folder / MANIFEST, None), (folder.parent / MANIFEST, folder.name)):
        if candidate.is_file():
            return candidate, split
    return None
