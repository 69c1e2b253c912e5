"""Metrics on hand-built detections and ground truth: COCO statistics against pycocotools'
COCOeval run directly, P/R/F1 and the F1-optimal threshold, and the confusion matrix against
a hand count."""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detflow.evaluate.metrics import (
    STAT_NAMES,
    coco_metrics,
    confusion_matrix,
    evaluate_predictions,
    f1_optimal,
    match_image,
    to_coco_results,
)


def _dataset(images: dict[int, list[tuple]], classes=("dog", "person", "cat")) -> dict:
    """images: id → [(category_id, x1, y1, x2, y2)], every image 200 × 200."""
    anns = [
        {
            "id": n,
            "image_id": image_id,
            "category_id": c,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": float((x2 - x1) * (y2 - y1)),
            "iscrowd": 0,
        }
        for n, (image_id, (c, x1, y1, x2, y2)) in enumerate(
            ((i, box) for i, boxes in images.items() for box in boxes), start=1
        )
    ]
    return {
        "images": [{"id": i, "width": 200, "height": 200, "file_name": f"{i}.png"} for i in images],
        "annotations": anns,
        "categories": [{"id": k, "name": n} for k, n in enumerate(classes, start=1)],
    }


def _predictions(items: dict[int, list[tuple]]) -> dict[int, dict]:
    """image id → [(category_id, score, x1, y1, x2, y2)] → numpy predictions."""
    out = {}
    for image_id, dets in items.items():
        rows = np.array([d[2:] for d in dets], float).reshape(-1, 4)
        out[image_id] = {
            "boxes": rows,
            "labels": np.array([d[0] for d in dets], np.int64),
            "scores": np.array([d[1] for d in dets], float),
        }
    return out


# Small (< 32²), medium and large boxes; image 3 has no ground truth (its detection is a false
# positive); class 3 (cat) has ground truth and no detection.
GROUND_TRUTH = _dataset(
    {
        1: [(1, 10, 10, 30, 30), (2, 50, 50, 100, 100), (1, 100, 20, 190, 150)],
        2: [(2, 0, 0, 120, 150), (3, 130, 130, 160, 180), (1, 5, 160, 25, 175)],
        3: [],
        4: [(2, 60, 60, 110, 120)],
    }
)
PREDICTIONS = _predictions(
    {
        1: [
            (1, 0.95, 11, 11, 30, 31),
            (2, 0.85, 52, 48, 101, 97),
            (1, 0.80, 105, 25, 185, 140),
            (2, 0.40, 10, 10, 31, 30),
            (1, 0.30, 0, 0, 200, 200),
        ],
        2: [(2, 0.90, 10, 5, 120, 140), (1, 0.60, 4, 158, 24, 170), (2, 0.20, 128, 128, 160, 180)],
        3: [(1, 0.70, 20, 20, 80, 80)],
        4: [(2, 0.55, 60, 80, 110, 140), (2, 0.50, 62, 58, 108, 121)],
    }
)


def _reference(tmp_path, dataset, detections, cat_ids=None) -> np.ndarray:
    """pycocotools used directly, from files, as its README shows."""
    (tmp_path / "gt.json").write_text(json.dumps(dataset))
    (tmp_path / "dt.json").write_text(json.dumps(detections))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "gt.json"))
        evaluator = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), "bbox")
        if cat_ids is not None:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def _detections(predictions) -> list[dict]:
    return [
        record
        for image_id, p in predictions.items()
        for record in to_coco_results(image_id, p["boxes"], p["labels"], p["scores"])
    ]


def test_coco_statistics_equal_pycocotools(tmp_path):
    detections = _detections(PREDICTIONS)
    ours = coco_metrics(GROUND_TRUTH, detections)
    reference = _reference(tmp_path, GROUND_TRUTH, detections)
    assert 0 < ours["map50_95"] < ours["map50"] < 1  # not a degenerate case
    for name, value in zip(STAT_NAMES, reference, strict=True):
        assert ours[name] == pytest.approx(max(value, 0.0), abs=1e-6), name
    for cat_id, name in ((1, "dog"), (2, "person"), (3, "cat")):
        one = _reference(tmp_path, GROUND_TRUTH, detections, cat_ids=[cat_id])
        assert ours["per_class_map50_95"][name] == pytest.approx(one[0], abs=1e-6), name
        assert ours["per_class_map50"][name] == pytest.approx(one[1], abs=1e-6), name
    assert ours["per_class_map50"]["cat"] == 0.0  # ground truth, no detection


def test_ap_by_hand_and_classes_without_ground_truth_left_out():
    dataset = _dataset({1: [(1, 0, 0, 50, 50), (1, 100, 100, 150, 150)]}, classes=("a", "b"))
    predictions = _predictions({1: [(1, 0.9, 0, 0, 50, 50), (2, 0.8, 60, 60, 90, 90)]})
    ours = coco_metrics(dataset, _detections(predictions))
    # recall 0.5 at precision 1: 51 of COCO's 101 recall points (0, 0.01, … 0.50)
    assert ours["map50"] == pytest.approx(51 / 101, abs=1e-9)
    assert ours["map50_95"] == pytest.approx(51 / 101, abs=1e-9)
    assert set(ours["per_class_map50"]) == {"a"}  # "b" has no ground truth: AP undefined


def test_no_detections_at_all():
    ours = coco_metrics(GROUND_TRUTH, [])
    assert all(ours[name] == 0.0 for name in STAT_NAMES)
    assert ours["per_class_map50_95"] == {"dog": 0.0, "person": 0.0, "cat": 0.0}


def test_matching_is_greedy_by_score_within_a_class():
    gt = np.array([[0, 0, 10, 10]], float)
    boxes = np.array([[0, 0, 10, 9], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    # best score takes the box even with a lower IoU; a box of another class never matches
    matched = match_image(gt, [1], boxes, [1, 1, 2], [0.9, 0.8, 0.99], iou=0.5)
    np.testing.assert_array_equal(matched, [0, -1, -1])
    assert (match_image(gt, [1], boxes[:1], [1], [0.9], iou=0.95) == -1).all()  # IoU 0.9


# The hand-counted case. Image 1 ground truth: dog A, person B, dog C.
HAND_GT = _dataset(
    {
        1: [(1, 0, 0, 10, 10), (2, 20, 20, 30, 30), (1, 50, 50, 60, 60)],
        2: [],
        3: [(2, 0, 0, 10, 10)],
    },
    classes=("dog", "person"),
)
HAND_PREDICTIONS = _predictions(
    {
        1: [
            (1, 0.9, 0, 0, 10, 10),  # dog on dog A: true positive
            (1, 0.8, 20, 20, 30, 30),  # dog on person B: person taken for a dog
            (2, 0.7, 100, 100, 110, 110),  # person on nothing: false detection
            (1, 0.3, 50, 50, 60, 60),  # dog on dog C, below 0.5: C is missed at 0.5
            (1, 0.6, 0, 0, 10, 10),  # second dog on A: false detection
        ],
        2: [(2, 0.95, 0, 0, 10, 10)],  # no ground truth: false detection
        3: [],  # person missed
    }
)


def test_confusion_matrix_matches_a_hand_count():
    matrix = confusion_matrix(HAND_GT, HAND_PREDICTIONS, score_threshold=0.5, iou=0.5)
    #          predicted: dog person background        actual:
    expected = [[1, 0, 1], [1, 0, 1], [1, 2, 0]]  # dog, person, background
    np.testing.assert_array_equal(matrix, expected)
    everything = confusion_matrix(HAND_GT, HAND_PREDICTIONS, score_threshold=0.0, iou=0.5)
    np.testing.assert_array_equal(everything, [[2, 0, 0], [1, 0, 1], [1, 2, 0]])


def test_precision_recall_f1_and_the_f1_optimal_threshold_by_hand():
    evaluation = evaluate_predictions(HAND_GT, HAND_PREDICTIONS, score_threshold=0.5, iou=0.5)
    m = evaluation.metrics
    # at 0.5: 5 detections, 1 true positive, 4 ground-truth boxes
    assert (m["precision"], m["recall"]) == pytest.approx((0.2, 0.25))
    assert m["f1"] == pytest.approx(2 * 0.2 * 0.25 / 0.45)
    # by score: .95 F, .9 T, .8 F, .7 F, .6 F, .3 T → F1 .0, .333, .286, .25, .222, .4
    assert m["f1_best"] == pytest.approx(
        {"threshold": 0.3, "precision": 1 / 3, "recall": 0.5, "f1": 0.4}
    )
    assert m["per_class_at_threshold"]["dog"] == pytest.approx(
        {"precision": 1 / 3, "recall": 0.5, "f1": 0.4}
    )
    assert m["per_class_at_threshold"]["person"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert (m["missed"], m["false_detections"], m["boxes"], m["images"]) == (2, 3, 4, 3)
    assert evaluation.labels == ["dog", "person", "background"]
    curve = {row["confidence"]: row for row in evaluation.confidence_curve}
    assert len(curve) == 101 and curve[0.0]["precision"] == pytest.approx(2 / 6)
    assert curve[0.5]["f1"] == pytest.approx(m["f1"])
    assert curve[1.0] == {"confidence": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_f1_optimal_ties_and_no_detections():
    # two detections share a score: a threshold cannot split them
    assert f1_optimal([0.9, 0.9], [True, False], 1) == pytest.approx(
        {"threshold": 0.9, "precision": 0.5, "recall": 1.0, "f1": 2 / 3}
    )
    assert f1_optimal([], [], 3) == {"threshold": None, "precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_confusion_matrix_agrees_with_precision_and_recall_on_random_cases():
    rng = np.random.default_rng(0)
    images = {
        i: [(int(rng.integers(1, 4)), *_box(rng)) for _ in range(rng.integers(0, 6))]
        for i in range(1, 30)
    }
    gt = _dataset(images)
    predictions = {}
    for i, boxes in images.items():
        jittered = [
            (c if rng.random() < 0.8 else 3, *(np.add(b, rng.normal(0, 3, 4)))) for c, *b in boxes
        ]
        extra = [(int(rng.integers(1, 4)), *_box(rng)) for _ in range(rng.integers(0, 3))]
        predictions[i] = _predictions(
            {i: [(c, float(rng.random()), *b) for c, *b in jittered + extra]}
        )[i]
    evaluation = evaluate_predictions(gt, predictions, score_threshold=0.3, iou=0.5)
    matrix, m = evaluation.confusion, evaluation.metrics
    true_positives = np.trace(matrix[:-1, :-1])
    assert m["precision"] == pytest.approx(true_positives / matrix[:, :-1].sum())
    assert m["recall"] == pytest.approx(true_positives / matrix[:-1].sum())
    assert matrix[:-1].sum() == len(gt["annotations"])
    kept = sum(int((p["scores"] >= 0.3).sum()) for p in predictions.values())
    assert matrix[:, :-1].sum() == kept and matrix[-1, -1] == 0


def _box(rng) -> tuple:
    x, y = rng.uniform(0, 150, 2)
    w, h = rng.uniform(8, 50, 2)
    return (x, y, x + w, y + h)


def test_difficult_and_crowd_boxes_are_ignored_as_pycocotools_ignores_crowd_regions(tmp_path):
    """A VOC difficult box and a COCO crowd box (``ignore`` in the canonical dataset) are
    neither hits nor misses: the statistics are pycocotools' own with both given as crowd
    regions, and equal those of the same data without the ignored boxes and the detections
    on them; P/R/F1 and the confusion counts do not change either."""
    dataset = json.loads(json.dumps(GROUND_TRUTH))
    extra = [
        (1, 1, [150, 150, 45, 45], {"ignore": "difficult", "iscrowd": 0}),  # detected below
        (4, 2, [0, 0, 40, 40], {"ignore": "crowd", "iscrowd": 1}),  # not detected
    ]
    for number, (image_id, category, bbox, flags) in enumerate(extra, start=100):
        dataset["annotations"].append(
            {"id": number, "image_id": image_id, "category_id": category, "bbox": bbox,
             "area": float(bbox[2] * bbox[3]), **flags}
        )  # fmt: skip
    predictions = {k: {n: v.copy() for n, v in p.items()} for k, p in PREDICTIONS.items()}
    on_difficult = (151.0, 150.0, 194.0, 196.0)  # same class, IoU > 0.9 with the difficult box
    predictions[1]["boxes"] = np.vstack([predictions[1]["boxes"], on_difficult])
    predictions[1]["labels"] = np.append(predictions[1]["labels"], 1)
    predictions[1]["scores"] = np.append(predictions[1]["scores"], 0.65)
    detections = _detections(predictions)

    ours = coco_metrics(dataset, detections)
    as_crowd = json.loads(json.dumps(dataset))
    for ann in as_crowd["annotations"]:
        if ann.pop("ignore", None):
            ann["iscrowd"] = 1  # pycocotools' own way to ignore a region
    reference = _reference(tmp_path, as_crowd, detections)
    without = coco_metrics(GROUND_TRUTH, _detections(PREDICTIONS))
    for name, value in zip(STAT_NAMES, reference, strict=True):
        assert ours[name] == pytest.approx(max(value, 0.0), abs=1e-6), name
        assert ours[name] == pytest.approx(without[name], abs=1e-9), name
    assert ours["per_class_map50"] == pytest.approx(without["per_class_map50"])

    mine = evaluate_predictions(dataset, predictions, score_threshold=0.5).metrics
    base = evaluate_predictions(GROUND_TRUTH, PREDICTIONS, score_threshold=0.5).metrics
    for key in ("precision", "recall", "f1", "missed", "false_detections", "boxes"):
        assert mine[key] == pytest.approx(base[key]), key
