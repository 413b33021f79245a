"""scripts/launch_torchtitan.sh run with stub srun / scontrol / nvidia-smi / torchrun: the exact commands."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "scripts" / "launch_torchtitan.sh"
TOML = "src/molgen3D/config/pretrain/qwen3_06b.toml"
RUNNER = ["-m", "molgen3D.training.pretraining.torchtitan_runner"]
RECORD = '#!/usr/bin/env bash\nprintf "%q " "$@" >> "{out}/{name}.argv"\n'
NVIDIA_SMI_8 = (
    '#!/usr/bin/env bash\nfor i in 0 1 2 3 4 5 6 7; do echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-$i)"; done\n'
)
SCONTROL = '#!/usr/bin/env bash\n[[ "$1 $2" == "show hostnames" ]] || exit 1\nfor h in gpu07 gpu08; do echo $h; done\n'


class Launch:
    """One launcher run in a fake repo (with the TOML) and stub tools; argv per tool and the env torchrun saw."""

    def __init__(self, tmp_path: Path, tools: dict[str, str | None]):
        self.out = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.repo = tmp_path / "repo"
        (self.repo / Path(TOML).parent).mkdir(parents=True)
        (self.repo / TOML).write_text("[job]\n")
        for name, body in tools.items():
            stub = self.bin / name
            stub.write_text(body if body is not None else RECORD.format(out=tmp_path, name=name))
            stub.chmod(0o755)
        torchrun = self.bin / "torchrun"
        torchrun.write_text(
            RECORD.format(out=tmp_path, name="torchrun")
            + 'env | grep -E "^(PYTORCH_ALLOC_CONF|PET_|SRUN_CPUS|HF_HUB_OFFLINE|WANDB_)" | sort'
            + f' > "{tmp_path}/env.txt"\n'
        )
        torchrun.chmod(0o755)
        python = self.bin / "python"  # runs the doctor: records it, exits $DOCTOR_RC
        python.write_text(RECORD.format(out=tmp_path, name="python") + 'exit "${DOCTOR_RC:-0}"\n')
        python.chmod(0o755)

    def run(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
        prefixes = (
            "SLURM_",
            "WANDB_",
            "CUDA_VISIBLE",
            "NGPU",
            "MASTER_",
            "TRAIN_TOML",
            "RUN_DESC",
            "TORCHRUN",
            "PET_",
            "PYTORCH_",
            "SRUN_",
            "HF_HUB",
            "MOLGEN3D_SKIP",
            "PYTHON",
            "DOCTOR_RC",
        )
        keep = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        full = {
            **keep,
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "MOLGEN3D_ROOT": str(self.repo),
            "TORCHRUN_LOG_DIR": str(self.out / "logs"),
            "PYTHON": str(self.bin / "python"),
            **env,
        }
        return subprocess.run(["bash", str(LAUNCHER), *args], env=full, capture_output=True, text=True, timeout=60)

    def argv(self, name: str) -> list[str] | None:
        path = self.out / f"{name}.argv"
        return shlex.split(path.read_text()) if path.exists() else None

    def env(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in (self.out / "env.txt").read_text().splitlines())


def test_launcher_is_valid_bash_with_sbatch_header():
    subprocess.run(["bash", "-n", str(LAUNCHER)], check=True)
    text = LAUNCHER.read_text()
    assert re.search(r"^#SBATCH --nodes=", text, re.M) and re.search(r"^#SBATCH --gpus-per-node=8", text, re.M)
    assert re.search(r"^#SBATCH --cpus-per-task=\d+", text, re.M)


def test_one_node_exact_command(tmp_path):
    launch = Launch(tmp_path, {"nvidia-smi": NVIDIA_SMI_8})
    done = launch.run({"RUN_DESC": "my run"}, "--training.steps", "10")
    assert done.returncode == 0, done.stderr
    assert launch.argv("torchrun") == [
        "--standalone",
        "--nnodes=1",
        "--nproc-per-node=8",  # --standalone: torchrun picks a free port
        f"--log-dir={tmp_path / 'logs'}",
        "--tee=3",
        *RUNNER,
        "--run-desc",
        "my run",
        "--train-toml",
        TOML,
        "--training.steps",
        "10",
    ]
    env = launch.env()
    assert env["PYTORCH_ALLOC_CONF"] == "expandable_segments:True"
    assert env["PET_LOCAL_RANKS_FILTER"] == "0"  # console: local rank 0; files: every rank
    assert "HF_HUB_OFFLINE" not in env and env["WANDB_PROJECT"] == "molgen3d"  # hub snapshots may download
    assert launch.argv("python") == ["-m", "molgen3D.cli", "doctor", "--train-toml", TOML, "--nodes", "1"] + [
        "--gpus-per-node",
        "8",
    ]
    assert env["WANDB_GROUP"] == env["WANDB_RUN_GROUP"] == "pretrain"


def test_one_node_explicit_port_and_visible_devices(tmp_path):
    launch = Launch(tmp_path, {})
    done = launch.run({"CUDA_VISIBLE_DEVICES": "0,1,2", "MASTER_PORT": "29777"})
    assert done.returncode == 0, done.stderr
    argv = launch.argv("torchrun")
    assert argv[:4] == ["--nnodes=1", "--nproc-per-node=3", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:29777"]
    assert "--run-desc" not in argv  # without $RUN_DESC the runner names the run after [job] description


def test_two_nodes_exact_command(tmp_path):
    launch = Launch(tmp_path, {"srun": None, "scontrol": SCONTROL, "nvidia-smi": NVIDIA_SMI_8})
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_CPUS_PER_TASK": "64",
    }
    done = launch.run({**slurm, "SLURM_GPUS_ON_NODE": "8"}, "--training.steps", "10")
    assert done.returncode == 0, done.stderr
    assert launch.argv("torchrun") is None  # srun (a stub here) starts it on every node
    assert launch.argv("python")[-4:] == ["--nodes", "2", "--gpus-per-node", "8"]  # the doctor checks 2 nodes
    srun = launch.argv("srun")
    assert srun[:5] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--gpus-per-node=8"]
    assert srun[5:8] == ["-c", "64", "bash"]
    wrapper = srun[9]
    assert srun[8] == "-c" and "SLURM_NODEID" in wrapper and "PET_LOCAL_RANKS_FILTER=-1" in wrapper
    assert srun[10:] == [
        "node0-console",
        "torchrun",
        "--nnodes=2",
        "--nproc-per-node=8",
        "--rdzv-id=4242",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpu07:24242",  # 20000 + 4242 % 10000
        f"--log-dir={tmp_path / 'logs'}",
        "--tee=3",
        *RUNNER,
        "--train-toml",
        TOML,
        "--training.steps",
        "10",
    ]


@pytest.mark.parametrize("node_id, shown", [("0", "0"), ("1", "-1")])
def test_two_nodes_console_only_from_node_zero(tmp_path, node_id, shown):
    """The srun wrapper keeps torchrun's console filter on node 0 and hides every rank elsewhere."""
    launch = Launch(tmp_path, {"srun": None, "scontrol": SCONTROL, "nvidia-smi": NVIDIA_SMI_8})
    slurm = {"SLURM_JOB_ID": "7", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    assert launch.run(slurm).returncode == 0
    srun = launch.argv("srun")
    assert "-c" not in srun[: srun.index("bash")]  # no --cpus-per-task requested: nothing to pass
    wrapped = srun[srun.index("bash") :]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PET_")},
        "PATH": f"{launch.bin}:/usr/bin:/bin",
        "SLURM_NODEID": node_id,
        "PET_LOCAL_RANKS_FILTER": "0",
    }
    subprocess.run(wrapped, env=env, check=True, timeout=30)
    assert launch.env()["PET_LOCAL_RANKS_FILTER"] == shown


def test_srun_cpus_per_task_exported(tmp_path):
    srun = f'#!/usr/bin/env bash\necho "$SRUN_CPUS_PER_TASK" > "{tmp_path}/srun_cpus"\n'
    launch = Launch(tmp_path, {"srun": srun, "scontrol": SCONTROL, "nvidia-smi": NVIDIA_SMI_8})
    slurm = {"SLURM_JOB_ID": "1", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_CPUS_PER_TASK": "48"}
    assert launch.run(slurm).returncode == 0
    assert (tmp_path / "srun_cpus").read_text().strip() == "48"


def test_no_gpu_is_an_error_not_a_silent_exit(tmp_path):
    launch = Launch(tmp_path, {"nvidia-smi": "#!/usr/bin/env bash\necho 'No devices were found'\nexit 6\n"})
    done = launch.run({})
    assert done.returncode == 2 and launch.argv("torchrun") is None
    assert "no GPU visible" in done.stderr and "NGPU_PER_NODE=1" in done.stderr
    assert "nvidia-smi -L failed: No devices were found" in done.stderr

    (tmp_path / "b").mkdir()
    done = Launch(tmp_path / "b", {"nvidia-smi": "#!/usr/bin/env bash\nexit 0\n"}).run({})
    assert done.returncode == 2 and "no GPU visible" in done.stderr


def test_cpu_run_with_explicit_process_count(tmp_path):
    launch = Launch(tmp_path, {})
    assert launch.run({"NGPU_PER_NODE": "1"}).returncode == 0
    assert "--nproc-per-node=1" in launch.argv("torchrun")


def test_missing_toml_is_an_error(tmp_path):
    launch = Launch(tmp_path, {"nvidia-smi": NVIDIA_SMI_8})
    done = launch.run({"TRAIN_TOML": "configs/nope.toml"})
    assert done.returncode == 2 and "TRAIN_TOML=configs/nope.toml does not exist" in done.stderr
    assert launch.argv("torchrun") is None


@pytest.mark.parametrize(
    "env, message",
    [
        ({"SLURM_NNODES": "0"}, "SLURM_NNODES=0 is not a positive node count"),
        ({"SLURM_NNODES": "two"}, "SLURM_NNODES=two is not a positive node count"),
        (
            {"SLURM_NNODES": "3", "SLURM_JOB_NODELIST": "gpu[07-08]"},
            "SLURM_NNODES=3 but SLURM_JOB_NODELIST=gpu[07-08] names 2 hosts",
        ),
        ({"NGPU_PER_NODE": "0"}, "NGPU_PER_NODE=0 is not a positive integer"),
    ],
)
def test_bad_node_or_gpu_count_is_an_error(tmp_path, env, message):
    launch = Launch(tmp_path, {"srun": None, "scontrol": SCONTROL, "nvidia-smi": NVIDIA_SMI_8})
    done = launch.run({"SLURM_JOB_ID": "5", **env})
    assert done.returncode == 2 and message in done.stderr
    assert launch.argv("srun") is None and launch.argv("torchrun") is None


def test_a_doctor_blocker_stops_the_launch(tmp_path):
    launch = Launch(tmp_path, {"nvidia-smi": NVIDIA_SMI_8})
    done = launch.run({"DOCTOR_RC": "1"})
    assert done.returncode == 2 and launch.argv("torchrun") is None
    assert "molgen3d doctor found a BLOCKER" in done.stderr and "MOLGEN3D_SKIP_DOCTOR=1" in done.stderr


@pytest.mark.parametrize("how", ["env", "flag"])
def test_the_doctor_can_be_skipped(tmp_path, how):
    launch = Launch(tmp_path, {"nvidia-smi": NVIDIA_SMI_8})
    env = {"DOCTOR_RC": "1", **({"MOLGEN3D_SKIP_DOCTOR": "1"} if how == "env" else {})}
    done = launch.run(env, *(["--skip-doctor"] if how == "flag" else []), "--training.steps", "3")
    assert done.returncode == 0, done.stderr
    assert launch.argv("python") is None and launch.argv("torchrun")[-2:] == ["--training.steps", "3"]


def test_a_users_hf_hub_offline_is_kept(tmp_path):
    launch = Launch(tmp_path, {"nvidia-smi": NVIDIA_SMI_8})
    assert launch.run({"HF_HUB_OFFLINE": "1"}).returncode == 0
    assert launch.env()["HF_HUB_OFFLINE"] == "1"
