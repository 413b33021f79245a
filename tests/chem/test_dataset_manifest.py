"""One rule finds a data set's manifest for the format check and the loader's manifest check."""

from __future__ import annotations

import json

from molgen3D.chem.coordinate_format import ORIGINAL, dataset_format
from molgen3D.chem.dataset_manifest import MANIFEST, find_manifest
from molgen3D.datasets.jsonl_paths import manifest_problem


def test_manifest_is_found_from_the_root_a_split_a_shard_and_a_glob(tmp_path):
    root = tmp_path / "set"
    shard = root / "train" / "part-00000.jsonl"
    shard.parent.mkdir(parents=True)
    shard.write_text("{}\n")
    assert find_manifest(root) is None and dataset_format(shard) is None
    (root / MANIFEST).write_text(json.dumps({"counts": {"train": {"conformers": 1, "files": [shard.name]}}}))
    assert find_manifest(root) == (root / MANIFEST, None)
    for path in (root / "train", shard, root / "train" / "*.jsonl"):
        assert find_manifest(path) == (root / MANIFEST, "train")
        assert dataset_format(path) == ORIGINAL
    assert manifest_problem(root / "train", {shard: 1}) == ""
    assert "counts 1 conformers but the files hold 2" in manifest_problem(root / "train", {shard: 2})
    assert find_manifest(root / "train" / "deeper") == (root / MANIFEST, "train")
    assert find_manifest(tmp_path / "elsewhere" / "x" / "y") is None
