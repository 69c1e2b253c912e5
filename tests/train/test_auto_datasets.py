"""The ``auto`` choices on datasets of different character, CI-sized (no training): the real
raccoon set (1-3 medium-to-large objects) and the bundled set train FCOS at 416 px; a
generated dense set (many small touching objects, ``bench/dataset_table.py``'s generator)
makes the single-level Faster R-CNN grow its input, while FCOS matches its boxes at 416 px."""

from __future__ import annotations

import importlib.util

import pytest

from detflow.data.collect import CollectOptions, collect_dataset
from detflow.data.manifest import load_dataset
from detflow.model.build import build_model
from detflow.model.postprocess_config import PostprocessOptions
from detflow.train import data_check
from detflow.train.options import TrainOptions
from detflow.train.plan import TrainingPlan, plan_training

from conftest import REPO

AUTO = {
    "backbone_weights": "none",
    "min_size": "auto",
    "max_size": "auto",
}
DEFAULT = {
    **AUTO,
    "name": "fasterrcnn_mobilenet_v2",
    "anchor_sizes": "auto",
    "anchor_aspect_ratios": "auto",
    "rois_per_image": "auto",
}
POSTPROCESS = PostprocessOptions(score_threshold=0.05, nms_iou=0.5, max_detections="auto")


def _collected(source: dict, out) -> dict:
    collect_dataset(options=CollectOptions.from_config(source), out_dir=out)
    return load_dataset(out / "dataset.json")


def _plan(config: dict, dataset: dict) -> TrainingPlan:
    return plan_training(
        model_config=config, postprocess=POSTPROCESS, options=TrainOptions(), train_dataset=dataset
    )


def _choices(config: dict, dataset: dict) -> tuple[dict, dict]:
    """The plan's model config, and its data check with its choices (``auto``)."""
    plan = _plan(config, dataset)
    return dict(plan.model), {**plan.check, "auto": dict(plan.choices)}


def _dense_generator():
    spec = importlib.util.spec_from_file_location(
        "dataset_table", REPO / "bench" / "dataset_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_dense


def test_raccoon_keeps_every_default(shared_datasets, tmp_path):
    dataset = _collected({"format": "voc", "path": str(shared_datasets / "raccoon")}, tmp_path)
    config, check = _choices(DEFAULT, dataset)
    assert check["best_possible_recall"] >= 0.95
    assert (config["min_size"], config["max_size"]) == (416, 416)
    assert config["anchor_sizes"] == [32, 64, 128, 256, 512] and config["rois_per_image"] == 64


def test_dense_small_objects_grow_the_default_input_and_suit_fcos(tmp_path):
    _dense_generator()(tmp_path / "dense", images=4)
    dataset = _collected({"format": "voc", "path": str(tmp_path / "dense")}, tmp_path / "raw")
    config, check = _choices(DEFAULT, dataset)
    assert check["best_possible_recall_default"] < 0.5  # one stride-32 map: most boxes unmatched
    assert config["min_size"] == 640 and check["data"]["input_size"] == [640, 640]
    assert check["best_possible_recall"] > check["best_possible_recall_default"] + 0.1
    assert config["rois_per_image"] > 64  # 15-45 boxes per image need more RoIs
    fcos, fcos_check = _choices({**AUTO, "name": "fcos_mobilenet_v2"}, dataset)
    assert fcos_check["best_possible_recall"] >= 0.95 and fcos["min_size"] == 416


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v2", "fcos_mobilenet_v2"])
def test_an_auto_input_size_builds_at_416(name):
    model = build_model(name=name, num_classes=2, min_size="auto", max_size="auto")
    assert data_check.input_size(model) == {"min_size": 416, "max_size": 416, "fixed_size": False}


def _chosen(dataset: dict, **given) -> tuple[dict, dict]:
    """The plan of the default config (``name: auto``) and ``given``: as :func:`_choices`."""
    return _choices({**DEFAULT, "name": "auto", "tiles": "auto", **given}, dataset)


def test_auto_model_picks_fcos_for_raccoon(shared_datasets, tmp_path):
    dataset = _collected({"format": "voc", "path": str(shared_datasets / "raccoon")}, tmp_path)
    config, check = _chosen(dataset)
    assert config["name"] == "fcos_mobilenet_v2" and config["min_size"] == 416
    assert list(check["best_possible_recall_by_model"]) == ["fcos_mobilenet_v2"]
    assert check["best_possible_recall"] >= 0.95
    assert check["auto"]["model.name"]["reason"].startswith("best possible recall ")
    assert check["auto"]["model.tiles"]["value"] == "off"  # objects large enough: whole images


def test_auto_model_picks_fcos_for_small_touching_objects(tmp_path):
    _dense_generator()(tmp_path / "dense", images=4)
    dataset = _collected({"format": "voc", "path": str(tmp_path / "dense")}, tmp_path / "raw")
    plan = _plan({**DEFAULT, "name": "auto", "tiles": "auto"}, dataset)
    config, check = dict(plan.model), {**plan.check, "auto": dict(plan.choices)}
    assert config == {
        "name": "fcos_mobilenet_v2",
        "backbone_weights": "none",
        "min_size": 416,
        "max_size": 416,
    }
    assert check["best_possible_recall_by_model"]["fcos_mobilenet_v2"] >= 0.95
    assert "anchor_sizes" not in str(check["auto"])  # the chosen model's choices only
    assert plan.metrics()["auto"]["name"] == "fcos_mobilenet_v2"
    assert plan.tiles is None and plan.metrics()["auto"]["tiles"] == "off"


def test_a_set_anchor_keeps_faster_rcnn(tmp_path):
    _dense_generator()(tmp_path / "dense", images=2)
    dataset = _collected({"format": "voc", "path": str(tmp_path / "dense")}, tmp_path / "raw")
    config, check = _chosen(dataset, anchor_sizes=[16, 32])
    assert config["name"] == "fasterrcnn_mobilenet_v2"
    assert check["auto"]["model.name"]["reason"] == "model.anchor_sizes is set (Faster R-CNN only)"


def test_auto_model_picks_fcos_for_the_bundled_set(thermal_source, tmp_path):
    """FCOS: the best of the candidates there (docs/benchmarks.md, "The candidate table");
    Faster R-CNN, asked for, keeps the values the bundled set was tuned with."""
    dataset = _collected({"format": "yolo", "path": str(thermal_source)}, tmp_path)
    config, check = _chosen(dataset)
    assert config == {**AUTO, "name": "fcos_mobilenet_v2", "min_size": 416, "max_size": 416}
    assert check["auto"]["model.tiles"]["value"] == "off"
    assert check["best_possible_recall"] >= 0.95
    faster_rcnn, faster_rcnn_check = _choices(DEFAULT, dataset)
    assert faster_rcnn == {
        **DEFAULT,
        "min_size": 416,
        "max_size": 416,
        "anchor_sizes": [32, 64, 128, 256, 512],
        "anchor_aspect_ratios": [0.5, 1.0, 2.0],
        "rois_per_image": 64,
    }
    assert 0.75 <= faster_rcnn_check["best_possible_recall"] < 0.9
