"""Label-issue candidates (cleanlab's object-detection scores) and `detflow review`'s export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from detflow.cli import main as cli
from detflow.core.files import read_json, write_json
from detflow.data.torch_dataset import DetectionDataset
from detflow.evaluate.insight import Insight
from detflow.evaluate.label_issues import confident_score, find_label_issues, issue_thresholds
from detflow.evaluate.report import issue_grid, issue_predictions

# image id → labels [(category, x, y, w, h)] and predictions [(category, score, x1, y1, x2, y2)]
CASES = {
    1: ([(1, 20, 20, 60, 60)], [(1, 0.99, 20, 20, 80, 80), (2, 0.99, 120, 110, 170, 190)]),
    2: ([(1, 30, 30, 70, 70)], [(2, 0.99, 30, 30, 100, 100)]),
    3: ([(1, 100, 100, 60, 60)], [(1, 0.99, 70, 70, 130, 130)]),
    4: ([(2, 40, 40, 50, 90)], [(2, 0.99, 41, 40, 90, 131)]),
}
EXPECTED = {1: "overlooked", 2: "swapped", 3: "badly_located"}
EVERY_BOX = {"dog": 1.25, "person": 1.25}  # bars × cleanlab's 0.8 = 1: no box left out


@pytest.fixture
def split(tmp_path):
    (tmp_path / "images").mkdir()
    dataset = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "person"}],
        "detflow": {"image_dir": "images"},
    }
    for image_id, (labels, _) in CASES.items():
        Image.new("RGB", (200, 200), (20 * image_id, 0, 0)).save(
            tmp_path / "images" / f"{image_id}.png"
        )
        dataset["images"].append(
            {
                "id": image_id,
                "file_name": f"{image_id}.png",
                "width": 200,
                "height": 200,
                "split": "test",
            }
        )
        for cat, x, y, w, h in labels:
            ann_id = len(dataset["annotations"]) + 1
            dataset["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    (tmp_path / "test.json").write_text(json.dumps(dataset))
    predictions = {}
    for image_id, (_, rows) in CASES.items():
        rows = np.asarray(rows, dtype=float)
        predictions[image_id] = {
            "boxes": rows[:, 2:],
            "labels": rows[:, 0].astype(np.int64),
            "scores": rows[:, 1],
        }
    return DetectionDataset(tmp_path / "test.json"), predictions


def test_each_planted_kind_ranks_above_the_clean_image(split):
    dataset, predictions = split
    issues = find_label_issues(dataset.dataset, predictions, split="test", thresholds=EVERY_BOX)
    top = issues[:3]
    assert {(r["image_id"], r["kind"]) for r in top} == set(EXPECTED.items()), issues
    assert all(r["score"] < 0.5 for r in top)
    assert [r["score"] for r in issues] == sorted(r["score"] for r in issues)
    overlooked = next(r for r in issues if r["kind"] == "overlooked")
    assert overlooked["box"] == [120.0, 110.0, 50.0, 80.0] and overlooked["class"] == "person"
    swapped = next(r for r in issues if r["kind"] == "swapped")
    assert swapped["class"] == "dog" and swapped["suggested"] == "person"
    assert all(r["score"] > top[-1]["score"] for r in issues if r["image_id"] == 4)


def test_only_boxes_at_or_below_their_class_bar_are_candidates(split):
    """cleanlab's find_label_issues rule: score <= class AP × 0.25 × 0.8. The overlooked and
    swapped boxes (score 0) stay, the badly located one (0.13) and the clean image go."""
    dataset, predictions = split
    bars = {"dog": 0.15, "person": 0.15}  # × 0.8 = 0.12
    issues = find_label_issues(dataset.dataset, predictions, split="test", thresholds=bars)
    assert {(r["image_id"], r["kind"]) for r in issues} == {(1, "overlooked"), (2, "swapped")}
    measured = issue_thresholds(dataset.dataset, predictions)
    assert set(measured) == {"dog", "person"} and all(0 < v < 0.25 for v in measured.values())
    default = find_label_issues(dataset.dataset, predictions, split="test")
    assert default == find_label_issues(
        dataset.dataset, predictions, split="test", thresholds=measured
    )
    assert len(default) < len(
        find_label_issues(dataset.dataset, predictions, split="test", thresholds=EVERY_BOX)
    )


def test_the_bar_is_a_quarter_of_the_class_ap():
    """Detections equal to the labels: AP 1, bar 0.25; a class with no labels: 0."""
    dataset, predictions = _scored([(True, 0.9), (True, 0.8)])
    for annotation in dataset["annotations"]:
        annotation |= {"iscrowd": 0, "area": 400}
    dataset["categories"].append({"id": 2, "name": "cat"})
    assert issue_thresholds(dataset, predictions) == {"dog": 0.25, "cat": 0.0}


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc"])
def test_review_exports_images_labels_and_prelabels(split, tmp_path, fmt, capsys):
    dataset, predictions = split
    issues = find_label_issues(dataset.dataset, predictions, split="test", thresholds=EVERY_BOX)
    insight = Insight(
        metrics={}, issues=issues, datasets={"test": dataset}, predictions={"test": predictions}
    )
    report = tmp_path / "label_issues.json"
    write_json(
        report, {"issues": issues, "predictions": issue_predictions(insight, score_threshold=0.5)}
    )
    assert issue_grid(insight, count=4, columns=2).shape[2] == 3
    out = tmp_path / "review"
    args = ["review", "--out", str(out), "--format", fmt, "--issues", str(report)]
    assert cli([*args, "--split", str(tmp_path), "--top", "3"]) == 0
    assert "3 label-issue candidates on 3 images" in capsys.readouterr().out
    assert len(read_json(out / "issues.json")["issues"]) == 3
    if fmt == "coco":
        labels = read_json(out / "labels" / "annotations.json")
        prelabels = read_json(out / "prelabels" / "annotations.json")
        assert len(labels["images"]) == 3 and len(labels["annotations"]) == 3
        assert len(prelabels["annotations"]) == 4  # images 1-3: 2 + 1 + 1 detections
    else:
        images = sorted(p.name for p in (out / "labels").rglob("*.png"))
        assert images == ["1.png", "2.png", "3.png"]
        assert sorted(p.name for p in (out / "prelabels").rglob("*.png")) == images
    assert cli([*args, "--split", str(tmp_path / "missing")]) == 2


def _scored(hits_and_scores):
    """A one-image split whose detections at ``scores`` are right (on a label) or wrong."""
    dataset = {
        "images": [{"id": 1, "file_name": "1.png", "width": 2000, "height": 100}],
        "annotations": [],
        "categories": [{"id": 1, "name": "dog"}],
    }
    boxes, scores = [], []
    for index, (right, score) in enumerate(hits_and_scores):
        x = 30 * index
        if right:
            dataset["annotations"].append(
                {"id": index + 1, "image_id": 1, "category_id": 1, "bbox": [x, 0, 20, 20]}
            )
        boxes.append([x, 0, x + 20, 20])
        scores.append(score)
    labels = np.ones(len(scores), np.int64)
    return dataset, {1: {"boxes": np.array(boxes, float), "labels": labels, "scores": scores}}


def test_auto_confidence_is_the_mean_score_of_the_right_detections():
    rows = [(True, 0.9), (True, 0.8), (True, 0.7), (False, 0.99), (False, 0.2)]
    assert confident_score(*_scored(rows)) == pytest.approx(0.8)  # wrong ones do not count
    assert confident_score(*_scored([(False, 0.99)])) == 0.95  # nothing right: cleanlab's
    assert confident_score(*_scored([])) == 0.95
