"""The train stage for real, in subprocesses on tiny data: a run killed with SIGKILL and
resumed ends exactly like an uninterrupted one; `torchrun` trains with DDP on 2 gloo ranks."""

from __future__ import annotations

import csv
import json
import signal
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, run
from train_helpers import tiny_split, without_timing

pytestmark = pytest.mark.slow

TINY = [
    "model.backbone_weights=none",
    "model.min_size=64",
    "model.max_size=64",
    "model.test_proposals=50",
    "train.epochs=3",
    "train.batch_size=2",
    "train.warmup_steps=2",
    "train.threads=1",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_split(tmp_path_factory.mktemp("tiny"))


def _stage(data: Path, run_dir: Path, *overrides, launcher=(sys.executable,), env=None):
    args = [
        *launcher,
        "stages/train.py",
        f"paths.augmented={data / 'augmented'}",
        f"paths.split={data / 'split'}",
        f"hydra.run.dir={run_dir}",
        *TINY,
        *overrides,
    ]
    return run(args, REPO, check=False, env=env)


def _curve(run_dir: Path, name: str) -> list[tuple[str, str]]:
    with open(run_dir / "reports/train/plots/metrics" / f"{name}.tsv") as handle:
        return [(row["step"], row[name]) for row in csv.DictReader(handle, delimiter="\t")]


def test_killed_run_resumes_to_exactly_the_uninterrupted_result(data, tmp_path):
    whole = _stage(data, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    # 6 training images in batches of 2: the 5th batch is in epoch 2
    killed = _stage(data, tmp_path / "resumed", env={"DETFLOW_KILL_AT": "train.batch:5"})
    assert killed.returncode == -signal.SIGKILL
    checkpoints = tmp_path / "resumed/models/train"
    assert torch.load(checkpoints / "last.pt", weights_only=True)["epoch"] == 1
    assert not [p for p in checkpoints.iterdir() if ".tmp-" in p.name]
    resumed = _stage(data, tmp_path / "resumed", "train.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "continuing from" in resumed.stdout + resumed.stderr
    for name in ("last.pt", "best.pt"):
        a, b = (torch.load(d / "models/train" / name, weights_only=True) for d in (
            tmp_path / "whole", tmp_path / "resumed"))  # fmt: skip
        assert a["epoch"] == b["epoch"]
        assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
        assert without_timing(a["history"]) == without_timing(b["history"])
        assert len(a["history"]) == a["epoch"]
    assert torch.load(tmp_path / "resumed/models/train/last.pt", weights_only=True)["epoch"] == 3
    for curve in ("train_loss", "lr", "val_map50", "val_map50_95"):  # DVCLive: every epoch once
        assert _curve(tmp_path / "whole", curve) == _curve(tmp_path / "resumed", curve)
        assert len(_curve(tmp_path / "resumed", curve)) == 3


def test_torchrun_trains_with_ddp_on_two_gloo_processes(data, tmp_path):
    result = _stage(
        data,
        tmp_path,
        "train.epochs=2",
        "train.unfreeze={0: 0, 1: 6}",  # the trainable set changes: DDP wraps the model anew
        launcher=(
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
        ),  # fmt: skip
        env={"OMP_NUM_THREADS": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert output.count("epoch 1/2:") == 1 and output.count("epoch 2/2:") == 1  # rank 0 logs
    state = torch.load(tmp_path / "models/train/last.pt", weights_only=True)
    assert state["epoch"] == 2 and not any(k.startswith("module.") for k in state["model_state"])
    # each rank takes 3 of the 6 images: 2 batches of 2, so 2 optimizer steps per epoch
    assert state["scheduler_state"]["step"] == 4
    metrics = json.loads((tmp_path / "reports/train/metrics.json").read_text())
    assert {"train_loss", "val_map50", "lr"} <= set(metrics)
    assert len(_curve(tmp_path, "val_map50")) == 2
