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
from detflow.evaluate.label_issues import KINDS, confident_score, find_label_issues
from detflow.evaluate.report import issue_grid, issue_predictions

# image id → labels [(category, x, y, w, h)] and predictions [(category, score, x1, y1, x2, y2)]
CASES = {
    1: ([(1, 20, 20, 60, 60)], [(1, 0.99, 20, 20, 80, 80), (2, 0.99, 120, 110, 170, 190)]),
    2: ([(1, 30, 30, 70, 70)], [(2, 0.99, 30, 30, 100, 100)]),
    3: ([(1, 100, 100, 60, 60)], [(1, 0.99, 70, 70, 130, 130)]),
    4: ([(2, 40, 40, 50, 90)], [(2, 0.99, 41, 40, 90, 131)]),
}
EXPECTED = {1: "overlooked", 2: "swapped", 3: "badly_located"}


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


def test_each_planted_kind_is_listed_and_the_clean_image_is_not(split):
    dataset, predictions = split
    issues = find_label_issues(dataset.dataset, predictions, split="test")
    assert {(r["image_id"], r["kind"]) for r in issues} == set(EXPECTED.items()), issues
    assert [r["score"] for r in issues] == sorted(r["score"] for r in issues)
    assert all(r["score"] < 0.5 for r in issues)
    overlooked = next(r for r in issues if r["kind"] == "overlooked")
    assert overlooked["box"] == [120.0, 110.0, 50.0, 80.0] and overlooked["class"] == "person"
    swapped = next(r for r in issues if r["kind"] == "swapped")
    assert swapped["class"] == "dog" and swapped["suggested"] == "person"


def test_only_confident_detections_contradict_a_label(split):
    """Every detection scores 0.99: confident from 0.99, none confident from 0.995."""
    dataset, predictions = split
    assert len(find_label_issues(dataset.dataset, predictions, split="t", confidence=0.99)) == 3
    assert find_label_issues(dataset.dataset, predictions, split="t", confidence=0.995) == []


def _image(labels, detections):
    """A one-image split (labels ``(category, x1, y1, x2, y2)``) and its detections
    ``(category, score, x1, y1, x2, y2)``; classes dog (1) and person (2)."""
    dataset = {
        "images": [{"id": 1, "file_name": "1.png", "width": 400, "height": 400}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1]}
            for i, (c, x1, y1, x2, y2) in enumerate(labels)
        ],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "person"}],
    }
    rows = np.asarray(detections, dtype=float).reshape(-1, 6)
    pred = {"boxes": rows[:, 2:], "labels": rows[:, 0].astype(np.int64), "scores": rows[:, 1]}
    return dataset, {1: pred}


def _kinds(labels, detections) -> list[str]:
    return [r["kind"] for r in find_label_issues(*_image(labels, detections), split="t")]


def test_a_swap_needs_a_matching_detection_of_the_other_class():
    """cleanlab gives each of these labels a swap score below 1; only the matched one
    (IoU 0.81) is a candidate, not one the person overlaps at IoU 0.33, nor a confirmed dog
    beside a person detected elsewhere."""
    assert _kinds([(1, 0, 0, 100, 100)], [(2, 0.99, 0, 0, 90, 90)]) == ["swapped"]
    assert _kinds([(1, 0, 0, 100, 100)], [(2, 0.99, 50, 0, 150, 100)]) == []
    dog_and_person = [(1, 0.99, 0, 0, 100, 100), (2, 0.99, 200, 200, 300, 300)]
    assert _kinds([(1, 0, 0, 100, 100)], dog_and_person) == ["overlooked"]


def test_a_detection_that_its_own_label_explains_contradicts_no_other():
    """A person holding a dog: the dog detection matches the dog label, so the person label it
    also matches (IoU 0.64) is no swap; an unlabelled dog would be (the model missed the
    person)."""
    dog, person = (1, 0, 0, 100, 100), (2, 0, 0, 100, 64)
    assert _kinds([dog, person], [(1, 0.99, 0, 0, 100, 100)]) == []
    assert _kinds([person], [(1, 0.99, 0, 0, 100, 100)]) == ["swapped"]


def test_badly_located_only_when_no_detection_of_its_class_matches():
    """The label is overlapped by a dog detection at IoU 0.33 (badly located) unless another
    dog detection matches it (IoU >= 0.5: confirmed, never a candidate)."""
    label, shifted = (1, 0, 0, 100, 100), (1, 0.99, 50, 0, 150, 100)
    assert _kinds([label], [shifted]) == ["badly_located"]
    assert _kinds([label], [shifted, (1, 0.99, 0, 0, 100, 90)]) == []
    assert _kinds([label], [(1, 0.99, 0, 0, 100, 60)]) == []  # IoU 0.6: matched


def test_a_label_seen_in_place_is_not_badly_located():
    """A shown (>= operating 0.5) but unconfident dog detection on the label: the model sees
    the dog there, so a confident dog beside it (IoU 0.33) is the model's error, not the
    label's; a detection below the operating score does not count."""
    label, shifted = (1, 0, 0, 100, 100), (1, 0.99, 50, 0, 150, 100)
    assert _kinds([label], [shifted, (1, 0.6, 0, 0, 100, 95)]) == []
    assert _kinds([label], [shifted, (1, 0.4, 0, 0, 100, 95)]) == ["badly_located"]
    found = find_label_issues(
        *_image([label], [shifted, (1, 0.6, 0, 0, 100, 95)]), split="t", operating=0.7
    )
    assert [r["kind"] for r in found] == ["badly_located"]


def test_an_unlabelled_object_touching_a_label_seen_in_place_is_overlooked():
    """Crowds: the person detection touches the dog label (IoU 0.05), which its own dog
    detection accounts for, so the person is an overlooked box; beside a dog label nothing
    detects, the same person detection is evidence of nothing (cleanlab's rule)."""
    dog, person = (1, 0, 0, 100, 100), (2, 0.99, 90, 0, 190, 100)
    assert _kinds([dog], [(1, 0.99, 0, 0, 100, 100), person]) == ["overlooked"]
    assert _kinds([dog], [(1, 0.6, 0, 0, 100, 100), person]) == ["overlooked"]
    assert _kinds([dog], [person]) == []


def test_the_closer_contradiction_ranks_first():
    """Swapped by a detection at IoU 0.9 before one at IoU 0.6; badly located by IoU 0.11
    before IoU 0.4 (cleanlab's scores: 1 - similarity, similarity)."""
    labels = [(1, 0, 0, 100, 100), (1, 200, 0, 300, 100), (1, 0, 200, 100, 300)]
    labels.append((1, 200, 200, 300, 300))
    detections = [(2, 0.99, 200, 0, 300, 60), (2, 0.99, 0, 0, 100, 90)]
    detections += [(1, 0.99, 243, 200, 343, 300), (1, 0.99, 80, 200, 180, 300)]
    issues = find_label_issues(*_image(labels, detections), split="t")
    assert [r["score"] for r in issues] == sorted(r["score"] for r in issues)
    corners = {kind: [r["box"][:2] for r in issues if r["kind"] == kind] for kind in KINDS}
    assert corners["swapped"] == [[0.0, 0.0], [200.0, 0.0]], issues
    assert corners["badly_located"] == [[0.0, 200.0], [200.0, 200.0]], issues


def test_swaps_on_different_images_keep_their_distances():
    """Two images, one swap each (person boxes on dog labels at IoU 0.9 and 0.6): cleanlab
    floors a swap score at the dataset's smallest label-detection similarity, here the 0.6
    pair's, which made both scores equal; without it the closer swap ranks first."""
    images = [({"id": i, "file_name": f"{i}.png", "width": 400, "height": 400}) for i in (1, 2)]
    dataset = {
        "images": images,
        "annotations": [
            {"id": i, "image_id": i, "category_id": 1, "bbox": [0, 0, 100, 100]} for i in (1, 2)
        ],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "person"}],
    }
    predictions = {
        i: {"boxes": np.array([[0, 0, 100, h]], float), "labels": np.array([2]), "scores": [0.99]}
        for i, h in ((1, 90), (2, 60))
    }
    issues = find_label_issues(dataset, predictions, split="t")
    assert [(r["image_id"], r["kind"]) for r in issues] == [(1, "swapped"), (2, "swapped")]
    assert issues[0]["score"] < issues[1]["score"] - 0.2, issues


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc"])
def test_review_exports_images_labels_and_prelabels(split, tmp_path, fmt, capsys):
    dataset, predictions = split
    issues = find_label_issues(dataset.dataset, predictions, split="test")
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


def _scored(hits_and_scores, *, missed: int = 0):
    """A one-image split whose detections at ``scores`` are right (on a label) or wrong, and
    ``missed`` labels no detection finds."""
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
    for index in range(len(hits_and_scores), len(hits_and_scores) + missed):
        dataset["annotations"].append(
            {"id": index + 1, "image_id": 1, "category_id": 1, "bbox": [30 * index, 0, 20, 20]}
        )
    labels = np.ones(len(scores), np.int64)
    return dataset, {1: {"boxes": np.array(boxes, float), "labels": labels, "scores": scores}}


def test_auto_confidence_is_the_labels_mean_self_confidence():
    """Each label's score is its matching detection's, 0 where none finds it."""
    rows = [(True, 0.9), (True, 0.8), (True, 0.7), (False, 0.99), (False, 0.2)]
    assert confident_score(*_scored(rows)) == pytest.approx(0.8)  # wrong ones do not count
    assert confident_score(*_scored(rows, missed=1)) == pytest.approx(0.6)  # 2.4 / 4 labels
    assert confident_score(*_scored([(False, 0.99)])) == 0.95  # nothing right: cleanlab's
    assert confident_score(*_scored([])) == 0.95
