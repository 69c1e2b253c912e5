"""Scale out on existing engines, for real, on the shared tiny repository: a DVC remote
round trip, a joblib-launched sweep and a submitit sweep (local executor), and the SLURM
launcher config."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from detflow.core.files import sha256_file

from conftest import REPO, run
from repo_helpers import dvc, restore_committed, train_sweep

pytestmark = pytest.mark.slow

OUTPUTS = ("data/raw", "data/clean", "data/split", "data/augmented", "models")
SWEEP = ["train.epochs=1", "train.threads=1"]


@pytest.fixture(scope="module")
def repo(tiny_repo) -> Path:
    """The shared tiny repo as committed (an earlier module may have left an experiment in
    its workspace)."""
    restore_committed(tiny_repo)
    assert "up to date" in dvc(tiny_repo, "status").stdout
    return tiny_repo


def _hashes(root: Path) -> dict[str, str]:
    files = (p for name in OUTPUTS for p in (root / name).rglob("*") if p.is_file())
    return {str(p.relative_to(root)): sha256_file(p) for p in files}


def test_a_local_remote_round_trips_every_output_and_a_fresh_clone_reruns_nothing(repo, tmp_path):
    remote = tmp_path / "remote"
    dvc(repo, "remote", "add", "--local", "--default", "storage", str(remote))
    try:
        before = _hashes(repo)
        deployed = {"models/deploy/model.onnx", "models/deploy/model.xml"}  # ONNX or OpenVINO IR
        assert deployed & set(before) and "data/raw/dataset.json" in before
        dvc(repo, "push")
        shutil.rmtree(repo / ".dvc/cache")
        for name in OUTPUTS:
            shutil.rmtree(repo / name)
        assert "deleted" in dvc(repo, "status").stdout
        dvc(repo, "pull")
        assert "up to date" in dvc(repo, "status").stdout
        assert _hashes(repo) == before
    finally:
        dvc(repo, "remote", "remove", "--local", "storage")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    dvc(clone, "remote", "add", "--local", "--default", "storage", str(remote))
    dvc(clone, "pull")
    assert "storage" in (clone / ".dvc/config.local").read_text()  # local settings …
    assert "storage" not in (clone / ".dvc/config").read_text()
    run(["git", "check-ignore", "-q", ".dvc/config.local"], clone)  # … never committed
    repro = dvc(clone, "repro").stdout
    assert "Running stage" not in repro, repro
    assert _hashes(clone) == before


def _sweep_results(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/sweep_result.json"))]


def test_a_joblib_launched_sweep_runs_two_jobs_with_both_results(repo):
    sweep = repo / "multirun/joblib"
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"]
    result = train_sweep(repo, *SWEEP, *launcher, "train.lr=0.01,0.005")
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    records = _sweep_results(sweep)
    assert sorted(r["overrides"][-1] for r in records) == ["train.lr=0.005", "train.lr=0.01"]
    for job in ("0", "1"):
        assert (sweep / job / "models/train/best.pt").is_file(), job
    with (sweep / "summary.csv").open() as handle:
        assert {row["train.lr"] for row in csv.DictReader(handle)} == {"0.01", "0.005"}


def test_the_slurm_launcher_config_composes_with_gpus_time_and_partition():
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    overrides += ["hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=30"]
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 4, 30)
    assert launcher.cpus_per_task == 8 and launcher.tasks_per_node == 1


def test_a_submitit_sweep_runs_a_job_with_the_local_executor(repo):
    sweep = repo / "multirun/submitit"
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20"]
    train_sweep(repo, *SWEEP, *launcher, f"hydra.sweep.dir={sweep}")
    (record,) = _sweep_results(sweep)
    assert record["objective"] == "val_map50" and record["summary"]["epoch"] == 1
    assert (sweep / "0/models/train/best.pt").is_file()
    assert list((sweep / ".submitit").glob("*/*_log.out"))  # it ran as a submitit job
    assert "up to date" in dvc(repo, "status").stdout
