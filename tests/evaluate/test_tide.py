"""The TIDE breakdown: our wrapper gives tidecv's own figures on a fixed fixture, and the
error types land where hand-built cases put them."""

from __future__ import annotations

import numpy as np
import pytest
from tidecv import TIDE, Data

from detflow.evaluate.metrics import coco_evaluate, to_coco_results
from detflow.evaluate.tide import error_breakdown, error_records

CATEGORIES = [{"id": 1, "name": "dog"}, {"id": 2, "name": "person"}]


def dataset(boxes: dict[int, list[tuple]]) -> dict:
    """image id → [(category, x, y, w, h)] as a canonical dataset (COCO xywh px)."""
    out = {"images": [], "annotations": [], "categories": CATEGORIES}
    for image_id, items in boxes.items():
        out["images"].append(
            {"id": image_id, "file_name": f"{image_id}.png", "width": 200, "height": 200}
        )
        for cat, x, y, w, h in items:
            ann_id = len(out["annotations"]) + 1
            out["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return out


def predictions(items: dict[int, list[tuple]]) -> dict[int, dict]:
    """image id → [(category, score, x1, y1, x2, y2)] as predictions (xyxy px)."""
    out = {}
    for image_id, rows in items.items():
        rows = np.asarray(rows, dtype=float).reshape(-1, 6)
        out[image_id] = {
            "boxes": rows[:, 2:],
            "labels": rows[:, 0].astype(np.int64),
            "scores": rows[:, 1],
        }
    return out


# A fixed fixture with every error type: a right box of the wrong class (cls), a badly placed
# box (loc), both, a duplicate, a detection on background and a box nobody found (miss).
GT = dataset(
    {
        1: [(1, 10, 10, 50, 50), (2, 100, 100, 40, 80)],
        2: [(1, 20, 20, 60, 60), (2, 120, 30, 30, 60)],
        3: [(2, 50, 50, 40, 90), (1, 140, 140, 40, 40)],
        4: [(1, 0, 0, 80, 80)],
    }
)
PRED = predictions(
    {
        1: [(1, 0.95, 12, 11, 61, 59), (1, 0.6, 100, 100, 140, 180), (1, 0.5, 14, 12, 60, 62)],
        2: [(1, 0.9, 45, 45, 100, 100), (2, 0.85, 121, 31, 150, 90), (2, 0.3, 0, 150, 30, 190)],
        3: [(2, 0.8, 52, 48, 90, 140), (2, 0.4, 150, 150, 195, 195)],
        4: [(1, 0.7, 2, 1, 79, 82), (2, 0.55, 100, 100, 130, 130)],
    }
)


def test_overall_figures_are_tidecvs_own_on_a_fixed_fixture():
    ours = error_breakdown(GT, PRED)
    gt, preds = Data("gt"), Data("preds")
    for ann in GT["annotations"]:
        x, y, w, h = ann["bbox"]
        gt.add_ground_truth(ann["image_id"], ann["category_id"], [x, y, x + w, y + h])
    for image_id, p in PRED.items():
        for box, label, score in zip(p["boxes"], p["labels"], p["scores"], strict=True):
            preds.add_detection(image_id, int(label), float(score), box.tolist())
    tide = TIDE()
    run = tide.evaluate(gt, preds, mode=TIDE.BOX, name="reference")
    reference = tide.get_main_errors()["reference"]
    assert ours["map50"] == pytest.approx(run.ap, abs=0.005)
    names = {
        "Cls": "cls",
        "Loc": "loc",
        "Both": "both",
        "Dupe": "dupe",
        "Bkg": "bkg",
        "Miss": "miss",
    }
    for short, value in reference.items():
        assert ours["overall"][names[short]] == pytest.approx(value, abs=0.005), short
    assert sum(v > 0 for v in ours["overall"].values()) >= 3, ours  # not a degenerate case
    # TIDE's AP50 is COCO's AP50 here (101-point interpolation, every class has ground truth)
    detections = [
        r for i, p in PRED.items() for r in to_coco_results(i, p["boxes"], p["labels"], p["scores"])
    ]
    assert ours["map50"] == pytest.approx(100 * coco_evaluate(GT, detections)[0]["map50"], abs=0.01)


def test_hand_built_cases_land_in_their_error_type():
    gt = dataset({1: [(1, 10, 10, 50, 50)]})
    wrong_class = error_breakdown(gt, predictions({1: [(2, 0.9, 10, 10, 60, 60)]}))
    assert wrong_class["overall"]["cls"] == pytest.approx(100.0)  # fixing it: AP 0 → 100
    assert wrong_class["per_class"]["dog"]["cls"] == pytest.approx(100.0)
    misplaced = error_breakdown(gt, predictions({1: [(1, 0.9, 30, 30, 80, 80)]}))  # IoU ~0.22
    assert misplaced["overall"]["loc"] == pytest.approx(100.0)
    assert misplaced["overall"]["cls"] == 0.0 and misplaced["map50"] == 0.0
    two = dataset({1: [(1, 10, 10, 50, 50), (1, 100, 100, 50, 50)]})
    found_one = predictions({1: [(1, 0.9, 150, 0, 190, 40), (1, 0.8, 10, 10, 60, 60)]})
    both = error_breakdown(two, found_one)  # background first, then one of two boxes
    assert both["overall"]["bkg"] > 0 and both["overall"]["miss"] > 0
    assert both["overall"]["cls"] == both["overall"]["loc"] == 0.0


def test_records_for_the_bar_chart():
    rows = error_records(error_breakdown(GT, PRED))
    assert {r["class"] for r in rows} == {"all", "dog", "person"}
    assert {r["error"] for r in rows} == {"cls", "loc", "both", "dupe", "bkg", "miss"}
