"""The evaluate report on disk: metrics, DVC plot data and the preview grid."""

import json

import numpy as np
import pytest
from PIL import Image

from detflow.core.errors import ConfigError
from detflow.core.files import read_json
from detflow.data.torch_dataset import DetectionDataset
from detflow.evaluate.inference import EvaluateOptions
from detflow.evaluate.metrics import evaluate_predictions
from detflow.evaluate.report import write_evaluation


def _dataset(tmp_path) -> DetectionDataset:
    (tmp_path / "images").mkdir()
    for i in (1, 2, 3):
        Image.new("RGB", (120, 80), (40 * i, 0, 0)).save(tmp_path / "images" / f"{i}.png")
    dataset = {
        "images": [
            {"id": i, "file_name": f"{i}.png", "width": 120, "height": 80} for i in (1, 2, 3)
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900.0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [50, 20, 40, 40], "area": 1600.0},
        ],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "person/child"}],
        "detflow": {"image_dir": "images"},
    }
    for ann in dataset["annotations"]:
        ann["iscrowd"] = 0
    (tmp_path / "test.json").write_text(json.dumps(dataset))
    return DetectionDataset(tmp_path / "test.json")


def test_write_evaluation_writes_metrics_and_every_plot(tmp_path):
    dataset = _dataset(tmp_path)
    predictions = {
        1: {"boxes": np.array([[10, 10, 40, 40.0]]), "labels": np.array([1]), "scores": [0.9]},
        2: {"boxes": np.array([[0, 0, 20, 20.0]]), "labels": np.array([2]), "scores": [0.6]},
    }
    predictions = {k: {**v, "scores": np.array(v["scores"])} for k, v in predictions.items()}
    evaluation = evaluate_predictions(dataset.dataset, predictions, score_threshold=0.5)
    out = tmp_path / "reports" / "evaluate"
    options = EvaluateOptions.from_config(
        {"score_threshold": 0.5, "iou": 0.5, "preview_images": 8, "preview_columns": 2}
    )
    write_evaluation(evaluation, out, dataset=dataset, options=options)
    metrics = read_json(out / "metrics.json")  # refuses NaN
    assert metrics["map50"] == pytest.approx(0.5) and metrics["f1_best"]["threshold"] == 0.9
    assert sorted(p.name for p in (out / "plots" / "pr").iterdir()) == [
        "dog.json",
        "person_child.json",
    ]
    pr = read_json(out / "plots" / "pr" / "dog.json")
    assert len(pr) == 101 and pr[0] == {
        "class": "dog",
        "recall": 0.0,
        "precision": pytest.approx(1),
    }
    assert len(read_json(out / "plots" / "confidence.json")) == 101
    confusion = read_json(out / "plots" / "confusion.json")
    assert sorted(map(tuple, (r.values() for r in confusion))) == [
        ("background", "person/child"),
        ("dog", "dog"),
        ("person/child", "background"),
    ]
    grid = Image.open(out / "plots" / "predictions.png")
    assert grid.size == (640, 640)  # 3 images, 2 columns of 320-px cells
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"iou": 1.5}, r"evaluate.iou=1.5 must be in \(0, 1\]"),
        ({"iou": 0}, "evaluate.iou=0 must be a number > 0"),
        ({"score_threshold": -1}, "evaluate.score_threshold=-1 must be a number >= 0"),
        ({"preview_images": 0}, "evaluate.preview_images=0 must be a number > 0"),
        ({"preview_columns": "4"}, "evaluate.preview_columns='4' must be an integer"),
        ({"threshold": 0.5}, "evaluate.threshold is not a evaluate option; allowed: bootstrap, "),
        ({"bootstrap": -1}, "evaluate.bootstrap=-1 must be an integer >= 0"),
        ({"issue_grid": 0}, "evaluate.issue_grid=0 must be an integer > 0"),
    ],
)
def test_evaluate_options_name_the_key_at_fault(change, message):
    with pytest.raises(ConfigError, match=message):
        EvaluateOptions.from_config(change)
