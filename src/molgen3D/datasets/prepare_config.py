"""`molgen3d prepare-data` options: what they mean, their checks, and what of them the manifest records."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from molgen3D.config.paths import resolve_path
from molgen3D.datasets.chemistry import MIN_ATOM_DISTANCE
from molgen3D.datasets.conformers import Settings
from molgen3D.datasets.inputs import bundled_smiles_file
from molgen3D.datasets.splits import validate_fractions

_PER_RUN = ("output", "input", "workers", "force", "shard_index", "num_shards", "finalize", "split_file")


class PrepareError(ValueError):
    """Nothing usable came out of the input; the message names the input file and why."""


@dataclass
class PrepareConfig:
    """Build a conformer data set from SMILES, 3D SDF or GEOM."""

    output: str
    """Output directory (or a paths.yaml alias such as data:embedded_root); gets train/ valid/ test/, manifest.json."""
    input: Path | None = None
    """.smi/.csv/.tsv of SMILES or .sdf of 3D conformers (optionally .gz), or a GEOM rdkit_folder, its
    summary_*.json or a folder of its pickles; default: wehi_mols.csv bundled with rdkit."""
    smiles_column: str | None = None
    """SMILES column of a CSV/TSV with a header; default: a column named smiles, else the first column."""
    conformers_per_molecule: int = 4
    """ETKDGv3 conformers embedded per SMILES (SDF and GEOM keep the conformers they have)."""
    max_conformers_per_molecule: int | None = 30
    """GEOM: keep at most this many conformers per molecule, highest Boltzmann weight first (none: all)."""
    max_molecules: int | None = None
    """Use only the first N input records (SDF: the first N distinct molecules; GEOM: the first N pickles)."""
    fragments: Literal["largest", "keep", "drop"] | None = None
    """Molecules of several fragments (salts): keep the largest, keep all, or drop the molecule. Default:
    drop for GEOM (as Torsional Diffusion, so results compare), largest for SMILES/SDF (a counter-ion has
    no meaningful place relative to the parent, and the parent is the molecule users mean)."""
    max_atom_degree: int | None = None
    """Drop conformers with an atom of more neighbours than this; default 4 for GEOM (Torsional Diffusion), off else."""
    min_atom_distance: float = MIN_ATOM_DISTANCE
    """Reject conformers with two atoms closer than this (Angstrom) or all atoms at one point."""
    split_file: Path | None = None
    """GEOM: a split file (split0.npy: train, valid, test index arrays into the sorted pickle list);
    default: the seeded split with exact counts."""
    seed: int = 42
    """Random seed of the embedding and of the split assignment."""
    mmff: bool = False
    """Optimise embedded conformers with MMFF94 (molecules MMFF cannot type are skipped)."""
    mmff_max_iters: int = 200
    """Maximum MMFF iterations per conformer."""
    precision: int = 4
    """Decimals of the coordinates (truncated toward zero)."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Share of molecules in train, valid, test (exact counts by largest remainder)."""
    lines_per_shard: int = 50_000
    """Conformer lines per part-NNNNN.jsonl file."""
    compress: bool = False
    """Write part-NNNNN.jsonl.gz instead of plain JSONL (the loader reads both)."""
    workers: int = 1
    """Worker processes (0 = one per CPU); does not change the output."""
    shard_index: int | None = None
    """Process only share I of --num-shards (e.g. $SLURM_ARRAY_TASK_ID); then run once with --finalize."""
    num_shards: int = 1
    """Number of shares the input is cut into for --shard-index / --finalize."""
    finalize: bool = False
    """Merge the shares written by --shard-index runs into the data set and its manifest."""
    force: bool = False
    """Rebuild even if the manifest says the output is up to date."""

    def validate(self) -> None:
        """Raise ValueError naming the option and the fix."""
        if self.conformers_per_molecule < 1:
            raise ValueError(f"--conformers-per-molecule must be >= 1, got {self.conformers_per_molecule}")
        if self.max_conformers_per_molecule is not None and self.max_conformers_per_molecule < 1:
            raise ValueError(f"--max-conformers-per-molecule must be >= 1, got {self.max_conformers_per_molecule}")
        if self.max_molecules is not None and self.max_molecules < 1:
            raise ValueError(f"--max-molecules must be >= 1 (or omitted for all), got {self.max_molecules}")
        if self.precision < 0:
            raise ValueError(f"--precision must be >= 0, got {self.precision}")
        if self.lines_per_shard < 1:
            raise ValueError(f"--lines-per-shard must be >= 1, got {self.lines_per_shard}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0 (0 = one per CPU), got {self.workers}")
        if self.mmff_max_iters < 1:
            raise ValueError(f"--mmff-max-iters must be >= 1, got {self.mmff_max_iters}")
        if self.min_atom_distance < 0:
            raise ValueError(f"--min-atom-distance must be >= 0, got {self.min_atom_distance}")
        if self.num_shards < 1:
            raise ValueError(f"--num-shards must be >= 1, got {self.num_shards}")
        if self.shard_index is not None and not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard-index must be in 0..{self.num_shards - 1}, got {self.shard_index}")
        if self.shard_index is not None and self.finalize:
            raise ValueError("--finalize merges all shares; run it without --shard-index")
        validate_fractions(self.split_fractions)

    def input_path(self) -> Path:
        return Path(self.input) if self.input is not None else bundled_smiles_file()

    def output_path(self) -> Path:
        return resolve_path(self.output)

    def settings(self) -> dict[str, Any]:
        """What determines the output (not workers, shares, force or where it goes): recorded in the manifest."""
        data = asdict(self)
        for key in _PER_RUN:
            data.pop(key)
        data["split_fractions"] = list(self.split_fractions)
        return data

    def unit_settings(self, kind: str) -> Settings:
        """Per-molecule settings with the defaults of this input kind filled in."""
        geom = kind == "geom"
        return Settings(
            conformers=self.conformers_per_molecule,
            seed=self.seed,
            mmff=self.mmff,
            mmff_max_iters=self.mmff_max_iters,
            precision=self.precision,
            fragments=self.fragments or ("drop" if geom else "largest"),
            max_atom_degree=self.max_atom_degree if self.max_atom_degree is not None else (4 if geom else None),
            max_conformers=self.max_conformers_per_molecule if geom else None,
            min_distance=self.min_atom_distance,
        )
