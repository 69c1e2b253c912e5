"""End to end, for real: DVC runs all eight stages on tiny synthetic data in a temporary git
copy of this repository (conftest's `tiny_repo`); then the config-truth, no-rerun and Hydra
multirun checks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from detflow.core.files import sha256_file

from conftest import run
from repo_helpers import dvc as _dvc
from repo_helpers import train_sweep

pytestmark = pytest.mark.slow


def test_all_eight_stages_produce_their_outputs(tiny_repo):
    for path in (
        "data/raw/dataset.json",
        "data/clean/dataset.json",
        "data/split/test.json",
        "data/augmented/train.json",
        "reports/augment_preview.png",
        "models/train/best.pt",
        "models/train/last.pt",
        "models/export/model.onnx",
        "models/optimized/ort_fp32.onnx",
        "models/optimized/int8_static.onnx",
        "models/optimized/int8_dynamic.onnx",
        "models/optimized/fp16.onnx",
        "models/deploy/model_card.json",
        "models/deploy/reference.json",
        "reports/optimize/latency.json",
    ):
        assert (tiny_repo / path).is_file(), path
    deployed = {p.name for p in (tiny_repo / "models/deploy").iterdir()}
    assert "model.onnx" in deployed or {"model.xml", "model.bin"} <= deployed, deployed
    benchmark = json.loads((tiny_repo / "reports/optimize/benchmark.json").read_text())
    machine = benchmark.pop("machine")  # what the figures depend on besides code and data
    assert machine["packages"]["onnxruntime"] and "instruction_sets" in machine
    statuses = {name: row["status"].split(":")[0] for name, row in benchmark.items()}
    configured = yaml.safe_load((tiny_repo / "params.yaml").read_text())["optimize"]["variants"]
    assert list(statuses) == configured and "openvino_fp32" in configured
    assert set(statuses.values()) <= {"ok", "skipped", "rejected"}, benchmark
    # the default deploy format, built by NNCF for real and measured (never skipped)
    assert statuses["openvino_int8"] in ("ok", "rejected"), benchmark["openvino_int8"]
    assert b"FakeQuantize" in (tiny_repo / "models/optimized/openvino_int8.xml").read_bytes()
    card = json.loads((tiny_repo / "models/deploy/model_card.json").read_text())
    assert statuses[card["variant"]] == "ok" and card["class_names"] == ["circle", "square"]
    assert len(card["source_commit"]) == 40
    evaluated = json.loads((tiny_repo / "reports/evaluate/metrics.json").read_text())
    assert card["cost"] == evaluated["cost"] and card["cost"]["params"] > 0  # params, FLOPs
    assert card["machine"] == machine and "test_map50_95" in card  # decided on val
    reference = json.loads((tiny_repo / "models/deploy/reference.json").read_text())
    assert reference["images"] > 0 and "brightness" in reference["signals"]  # serve's drift
    metrics = json.loads(_dvc(tiny_repo, "metrics", "show", "--json").stdout)
    flat = json.dumps(metrics)
    for key in ("map50_95", "map50", "max_box_error_px", "latency_ms_p50", "size_mb"):
        assert f'"{key}"' in flat, key
    shown = _dvc(tiny_repo, "metrics", "show").stdout
    assert "reports/evaluate/metrics.json" in shown and "reports/optimize/benchmark.json" in shown
    export = json.loads((tiny_repo / "reports/export.json").read_text())
    assert export["passed"] and export["images"] == 4


def test_evaluate_writes_metrics_and_plots_that_dvc_renders(tiny_repo, tmp_path):
    metrics = json.loads((tiny_repo / "reports/evaluate/metrics.json").read_text())
    for key in ("map50_95", "precision", "recall", "f1", "f1_best", "missed", "latency_ms_p95"):
        assert key in metrics, key
    plots = tiny_repo / "reports/evaluate/plots"
    expected = ["confidence.json", "confusion.json", "pr/circle.json", "pr/square.json"]
    for name in [*expected, "predictions.png"]:
        assert (plots / name).is_file(), name
    shown = json.loads(_dvc(tiny_repo, "plots", "show", "--json").stdout)
    assert not shown.get("errors"), shown.get("errors")
    rendered = {key: [p["type"] for p in value] for key, value in shown["data"].items()}
    for name in expected:
        assert rendered[f"reports/evaluate/plots/{name}"] == ["vega"], name
    assert rendered["reports/evaluate/plots/predictions.png"] == ["image"]
    assert rendered["reports/evaluate/plots/errors.json"] == ["vega"]  # TIDE breakdown
    assert rendered["reports/evaluate/plots/label_issues.png"] == ["image"]
    low, high = metrics["map50_ci"]
    assert low <= metrics["map50"] <= high and metrics["bootstrap"]["resamples"] == 1000
    assert set(metrics["errors"]["overall"]) == {"cls", "loc", "both", "dupe", "bkg", "miss"}
    assert metrics["cost"]["params"] > 0 and metrics["cost"]["gflops_per_image"] > 0
    issues = json.loads((tiny_repo / "reports/evaluate/label_issues.json").read_text())
    assert {i["split"] for i in issues["issues"]} <= {"val", "test"}
    html = tmp_path / "plots_html"
    _dvc(tiny_repo, "plots", "show", "-o", str(html))
    page = (html / "index.html").read_text()
    assert "errors.json" in page and "label_issues.png" in page
    assert rendered["reports/augment_preview.png"] == ["image"]
    assert rendered["reports/optimize/latency.json"] == ["vega"]


def test_status_is_clean_and_a_second_repro_reruns_nothing(tiny_repo):
    assert "up to date" in _dvc(tiny_repo, "status").stdout
    second = _dvc(tiny_repo, "repro").stdout
    assert "Running stage" not in second, second


def test_changing_optimize_params_reruns_only_optimize(tiny_repo):
    params = tiny_repo / "params.yaml"
    original = params.read_text()
    config = yaml.safe_load(original)
    config["optimize"]["warmup_runs"] += 1
    params.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        status = json.loads(_dvc(tiny_repo, "status", "--json").stdout)
        assert set(status) == {"optimize"}, status
    finally:
        params.write_text(original)
    assert "up to date" in _dvc(tiny_repo, "status").stdout


@pytest.mark.parametrize(
    ("module", "stale"),
    [
        ("deploy/predict.py", set()),  # the predict CLI: no stage runs it
        ("data/augment.py", {"augment"}),  # its output decides whether train reruns
        ("deploy/quantize.py", {"optimize"}),
    ],
)
def test_editing_library_code_marks_only_the_stages_that_run_it(tiny_repo, module, stale):
    """dvc.yaml's deps are the stage scripts' import closures (tests/pipeline/test_dvc_deps.py):
    an edit to a module stales the stages that import it and their downstream, no others."""
    path = tiny_repo / "src" / "detflow" / module
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    try:
        status = json.loads(_dvc(tiny_repo, "status", "--json").stdout)
        assert set(status) == stale, status
    finally:
        path.write_text(original)
    assert "up to date" in _dvc(tiny_repo, "status").stdout


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in root.rglob("*") if p.is_file()}


def test_hydra_multirun_writes_its_own_folders_and_a_summary_only(tiny_repo):
    """A 2-point sweep on `train`: one folder per job, summary.csv/.md best first with the
    best job as a `dvc exp run` line; the DVC outputs under data/ and models/ stay as they were."""
    before = {name: _tree_hashes(tiny_repo / name) for name in ("data", "models")}
    result = train_sweep(
        tiny_repo, "train.lr=0.01,0.02", "train.epochs=1", "hydra.sweep.dir=multirun/test"
    )
    sweep = tiny_repo / "multirun/test"
    runs = sorted(sweep.glob("*/models/train/best.pt"))
    assert len(runs) == 2, result.stdout + result.stderr
    lrs = {torch.load(p, weights_only=True)["config"]["train"]["lr"] for p in runs}
    assert lrs == {0.01, 0.02}
    for job in ("0", "1"):
        assert (sweep / job / "reports/train/metrics.json").is_file(), job
    with (sweep / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["train.lr"] for row in rows} == {"0.01", "0.02"}
    values = [float(row["val_map50"]) for row in rows]
    assert values == sorted(values, reverse=True)  # best first
    assert {"job", "train.epochs", "val_map50_95", "train_loss"} <= set(rows[0])
    markdown = (sweep / "summary.md").read_text().splitlines()
    assert markdown[0].startswith("| job | train.epochs | train.lr | val_map50 |")
    assert len(markdown) == 2 + len(rows)
    best = f"best: dvc exp run -S train.lr={rows[0]['train.lr']} -S train.epochs=1"
    assert best in result.stdout, result.stdout
    assert {name: _tree_hashes(tiny_repo / name) for name in ("data", "models")} == before
    assert "up to date" in _dvc(tiny_repo, "status").stdout


def test_metrics_diff_compares_evaluate_results_across_commits(tiny_repo):
    """Commit one result, rerun evaluate with other post-processing, `dvc metrics diff`: the
    committed metrics file is compared key by key (the tiny model's mAP may be 0 in both)."""
    run(["git", "add", "-A"], tiny_repo)
    run(["git", "commit", "-qm", "first result", "--allow-empty"], tiny_repo)
    params = tiny_repo / "params.yaml"
    config = yaml.safe_load(params.read_text())
    config["postprocess"]["max_detections"] = 1
    params.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        _dvc(tiny_repo, "repro", "--single-item", "evaluate")
        diff = json.loads(_dvc(tiny_repo, "metrics", "diff", "--all", "--json").stdout)
        evaluate = diff["reports/evaluate/metrics.json"]
        for key in ("map50", "map50_95", "f1", "per_class_map50.circle"):
            assert {"old", "new"} <= set(evaluate[key]), key
        assert evaluate["latency_ms_p50"]["diff"] != 0  # a fresh run: some figure changed
    finally:
        run(["git", "checkout", "--", "."], tiny_repo)
    assert "up to date" in _dvc(tiny_repo, "status").stdout


def test_exp_run_set_params_reach_the_stage(tiny_repo):
    """`dvc exp run -S` changes params.yaml only; the stage must train what it says."""
    other = "fasterrcnn_mobilenet_v3_large_320_fpn"
    _dvc(tiny_repo, "exp", "run", "train", "-S", "train.epochs=1", "-S", f"model={other}")
    state = torch.load(tiny_repo / "models/train/best.pt", weights_only=True)
    assert state["config"]["model"]["name"] == other
    assert state["config"]["train"]["epochs"] == 1
    assert state["epoch"] == 1
    assert any(key.startswith("backbone.body.") for key in state["model_state"])
    assert yaml.safe_load((tiny_repo / "params.yaml").read_text())["model"]["name"] == other
