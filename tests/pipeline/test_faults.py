"""Fault injection, for real: in one tiny DVC repository, each of the eight stages is killed
with SIGKILL part-way (``DETFLOW_KILL_AT``, ``dvc repro --force --single-item <stage>``); no
partial output is ever visible at its output paths. The stage is then run again by DVC (forced:
a plain ``dvc repro`` would only restore the outputs from DVC's cache), and every output
equals the uninterrupted run's; at the end the whole pipeline is up to date.

Compared byte for byte, except what depends on the clock: latency, throughput and images/s
fields (``TIMING_KEYS``) are left out of JSON files and checkpoints' histories, and DVCLive's
``train_images_per_s`` curve is skipped. Checkpoints are compared by content (every tensor's
bytes and every other value), since their pickled bytes hold those timings. ``models/deploy``
is the fastest variant, which timing decides: it is checked to be byte-identical to the
optimized variant its model card names instead. ``ort_fp32.onnx`` is ONNX Runtime's saved
optimized graph, whose node order (and the names of nodes it adds) varies from build to build
of one model (ties in its graph transforms); it is compared by content: every initializer's
bytes, the multiset of nodes (op type, attributes), inputs, outputs and metadata.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import onnx
import pytest
import torch
import yaml

from detflow.core.faults import POINTS

from conftest import REPO, run
from repo_helpers import dvc, make_tiny_repo

FAULT_CONFIG = """\
defaults:
  - config
  - override data: synthetic
  - _self_

data:
  num_images: 24
  image_size: 64
model:
  backbone_weights: none
  min_size: 64
  max_size: 64
  test_proposals: 50
augment:
  workers: 1
  preview_samples: 2
train:
  epochs: 2
  warmup_steps: 2
evaluate:
  preview_images: 2
export:
  parity_images: 3
optimize:
  variants: [ort_fp32, int8_dynamic]
  warmup_runs: 0
  calibration_images: 2
"""

# stage → (kill point, k-th call, its outputs (dvc.yaml outs, metrics and plots))
STAGES = {
    "collect": ("collect.image", 5, ["data/raw", "reports/collect.json"]),
    "clean": (
        "clean.image",
        5,
        ["data/clean", "reports/clean.json", "reports/clean_classes.csv"],
    ),
    "split": ("split.output", 2, ["data/split", "reports/split.json"]),
    "augment": (
        "augment.image",
        3,
        ["data/augmented", "reports/augment.json", "reports/augment_preview.png"],
    ),
    "train": (
        "train.batch",
        6,  # part-way through epoch 1: the last run's checkpoints (persisted) must stay whole
        ["models/train/best.pt", "models/train/last.pt", "reports/train"],
    ),
    "evaluate": ("evaluate.image", 2, ["reports/evaluate"]),
    "export": ("export.image", 2, ["models/export/model.onnx", "reports/export.json"]),
    "optimize": (
        "optimize.variant",
        1,
        ["models/optimized", "models/deploy", "reports/optimize"],
    ),
}
TIMING_KEYS = {
    "latency_ms_p50",
    "latency_ms_p95",
    "throughput_img_s",
    "train_images_per_s",
    "p50_ms",
}
TIMING_FILES = {"reports/train/plots/metrics/train_images_per_s.tsv"}
UNORDERED_ONNX = {"ort_fp32.onnx"}  # ORT's saved optimized graph: node order varies
# Written by a killed stage as it goes, by design: checkpoints for `train.resume` (persisted,
# each written atomically) and DVCLive's per-epoch curves.
PROGRESSIVE = {"models/train/best.pt", "models/train/last.pt", "reports/train"}
# Stages whose kill point is inside an output's write (the others are killed before it)
KILLED_MID_WRITE = {"collect", "clean", "split", "augment", "export", "optimize"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_tiny_repo(tmp_path_factory.mktemp("faults") / "repo", config=FAULT_CONFIG)


@pytest.fixture(scope="module")
def uninterrupted(repo) -> dict:
    return _snapshot(repo)


def _canonical(value):
    """Comparable content: tensors by dtype, shape and bytes; timing keys left out."""
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().numpy().tobytes()
        return ("tensor", str(value.dtype), tuple(value.shape), hashlib.sha256(data).hexdigest())
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _onnx_content(path: Path):
    """An ONNX model as what it computes with, whatever its node order and generated names."""
    model = onnx.load(str(path))
    graph = model.graph
    return {
        "initializers": sorted(hashlib.sha256(i.raw_data).hexdigest() for i in graph.initializer),
        "nodes": sorted(
            (n.op_type, n.domain, tuple(a.SerializeToString() for a in n.attribute))
            for n in graph.node
        ),
        "io": [str(v.type) for v in (*graph.input, *graph.output)],
        "metadata": sorted((p.key, p.value) for p in model.metadata_props),
    }


def _content(path: Path):
    if path.name in UNORDERED_ONNX:
        return _onnx_content(path)
    if path.suffix == ".pt":
        return _canonical(torch.load(path, weights_only=True))
    if path.suffix == ".json":
        return _canonical(json.loads(path.read_text()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(repo: Path, output: str) -> dict[str, object]:
    root = repo / output
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {
        p.relative_to(repo).as_posix(): _content(p)
        for p in paths
        if p.relative_to(repo).as_posix() not in TIMING_FILES
    }


def _snapshot(repo: Path) -> dict[str, object]:
    snapshot = {}
    for _, _, outputs in STAGES.values():
        for output in outputs:
            if output != "models/deploy":
                snapshot.update(_files(repo, output))
    return snapshot


def _leftovers(repo: Path) -> list[str]:
    return [
        p.relative_to(repo).as_posix()
        for top in ("data", "models", "reports")
        for p in (repo / top).rglob("*")
        if ".tmp-" in p.name
    ]


def _check_deploy(repo: Path) -> None:
    card = json.loads((repo / "models/deploy/model_card.json").read_text())
    deployed = (repo / "models/deploy/model.onnx").read_bytes()
    assert deployed == (repo / "models/optimized" / f"{card['variant']}.onnx").read_bytes()
    assert card["model_sha256"] == hashlib.sha256(deployed).hexdigest()


def test_every_stage_has_kill_points_in_its_work_loop():
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(STAGES) == set(pipeline) and {p for p, _, _ in STAGES.values()} <= set(POINTS)
    code = "".join(path.read_text() for path in (REPO / "src" / "detflow").rglob("*.py"))
    assert {p for p in POINTS if f'maybe_kill("{p}")' not in code} == set()


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_killed_stage_leaves_no_partial_output_and_repro_restores_it(repo, uninterrupted, stage):
    point, k, outputs = STAGES[stage]
    killed = run(
        [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", stage],
        repo,
        check=False,
        env={"DETFLOW_KILL_AT": f"{point}:{k}"},
    )
    log = killed.stdout + killed.stderr
    assert killed.returncode != 0 and f"SIGKILL at {point}:{k}" in log, log[-3000:]
    if stage in KILLED_MID_WRITE:  # the partial output exists, but only under a temporary name
        assert _leftovers(repo), f"{stage}: killed mid-write, yet no temporary sibling"
    for output in outputs:  # each output: the previous one, whole, or none at all
        if output in PROGRESSIVE or not (repo / output).exists():
            continue
        if output == "models/deploy":
            _check_deploy(repo)
            continue
        whole = {
            p: c for p, c in uninterrupted.items() if p == output or p.startswith(output + "/")
        }
        seen = _files(repo, output)  # DVC may leave an output's emptied folder: none
        assert seen in ({}, whole), f"{stage}: {output} is partial or holds other files"
    for checkpoint in ("best.pt", "last.pt"):  # complete, loadable checkpoints or none
        path = repo / "models/train" / checkpoint
        assert not path.exists() or torch.load(path, weights_only=True)["epoch"] >= 1
    # run it again (a plain `dvc repro` would restore the outputs from DVC's cache); stages
    # after it are rerun by their own cases (train's new checkpoints differ only in timings)
    rerun = dvc(repo, "repro", "--force", "--single-item", stage)
    assert f"Running stage '{stage}'" in rerun.stdout, rerun.stdout[-3000:]
    assert _snapshot(repo) == uninterrupted
    _check_deploy(repo)
    assert _leftovers(repo) == []  # the killed run's temporary siblings were removed
    assert "up to date" in dvc(repo, "status", stage).stdout


@pytest.mark.slow
def test_after_every_kill_the_pipeline_is_up_to_date(repo, uninterrupted):
    assert "up to date" in dvc(repo, "status").stdout
    assert _snapshot(repo) == uninterrupted
