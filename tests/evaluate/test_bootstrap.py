"""Group-aware bootstrap of COCO mAP: the pooling redone per resample equals pycocotools, and
the intervals behave (contain the point estimate, narrow with more images)."""

from __future__ import annotations

import numpy as np
import pytest

from detflow.evaluate.bootstrap import accumulate, bootstrap_ci, match_table, summary
from detflow.evaluate.metrics import coco_evaluate, to_coco_results


def synthetic(images: int, *, seed: int, group_size: int = 1) -> tuple[dict, list[dict]]:
    """A 2-class dataset (one or two boxes per image, some ignored) and noisy detections:
    most boxes found with a jittered box, some missed, some false detections."""
    rng = np.random.default_rng(seed)
    gt = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    dets = []
    for i in range(1, images + 1):
        gt["images"].append(
            {
                "id": i,
                "file_name": f"{i}.png",
                "width": 200,
                "height": 200,
                "group": f"g{(i - 1) // group_size}",
            }
        )
        for _ in range(rng.integers(1, 3)):
            x, y, w, h = (
                rng.uniform(0, 120),
                rng.uniform(0, 120),
                rng.uniform(20, 60),
                rng.uniform(20, 60),
            )
            label = int(rng.integers(1, 3))
            ann = {
                "id": len(gt["annotations"]) + 1,
                "image_id": i,
                "category_id": label,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
            if rng.random() < 0.05:
                ann["ignore"] = 1
            gt["annotations"].append(ann)
            if rng.random() < 0.8:
                jitter = rng.normal(0, 6, 4)
                box = [x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]]
                dets += to_coco_results(i, [box], [label], [rng.uniform(0.2, 1.0)])
        for _ in range(rng.integers(0, 2)):
            x, y = rng.uniform(0, 150), rng.uniform(0, 150)
            dets += to_coco_results(
                i, [[x, y, x + 30, y + 30]], [int(rng.integers(1, 3))], [rng.uniform(0.0, 0.7)]
            )
    return gt, dets


def test_identity_resample_equals_pycocotools():
    gt, dets = synthetic(40, seed=3)
    reference, _ = coco_evaluate(gt, dets)
    table = match_table(gt, dets)
    ours = summary(accumulate(table, np.ones(len(table.groups), dtype=int)), table.classes)
    assert 0.2 < reference["map50"] < 0.95  # not a degenerate case
    assert ours["map50"] == pytest.approx(reference["map50"], abs=1e-12)
    assert ours["map50_95"] == pytest.approx(reference["map50_95"], abs=1e-12)
    for name, value in reference["per_class_map50"].items():
        assert ours["per_class_map50"][name] == pytest.approx(value, abs=1e-12), name


def test_a_resample_with_repeats_equals_pycocotools_on_the_repeated_dataset():
    gt, dets = synthetic(12, seed=5)
    counts = np.array([0, 2, 1, 3, 0, 1, 1, 0, 2, 1, 1, 1])
    repeated = {**gt, "images": [], "annotations": []}
    repeated_dets, new_id = [], 0
    for image in gt["images"]:
        for _ in range(counts[image["id"] - 1]):
            new_id += 1
            repeated["images"].append({**image, "id": new_id})
            for ann in gt["annotations"]:
                if ann["image_id"] == image["id"]:
                    ann_id = len(repeated["annotations"]) + 1
                    repeated["annotations"].append({**ann, "id": ann_id, "image_id": new_id})
            repeated_dets += [
                {**d, "image_id": new_id} for d in dets if d["image_id"] == image["id"]
            ]
    reference, _ = coco_evaluate(repeated, repeated_dets)
    table = match_table(gt, dets)
    ours = summary(accumulate(table, counts), table.classes)
    assert ours["map50"] == pytest.approx(reference["map50"], abs=1e-9)
    assert ours["map50_95"] == pytest.approx(reference["map50_95"], abs=1e-9)


def test_interval_contains_the_estimate_and_narrows_with_more_images():
    widths = []
    for images in (20, 200):
        gt, dets = synthetic(images, seed=11, group_size=2)
        point, _ = coco_evaluate(gt, dets)
        ci = bootstrap_ci(gt, dets, resamples=300, seed=0)
        assert ci["bootstrap"]["groups"] == images // 2  # images of a group drawn together
        for key, ci_key in (("map50", "map50_ci"), ("map50_95", "map50_95_ci")):
            low, high = ci[ci_key]
            assert low <= point[key] <= high, (images, key, ci[ci_key], point[key])
        for name, (low, high) in ci["per_class_map50_ci"].items():
            assert low <= point["per_class_map50"][name] <= high, name
        widths.append(ci["map50_ci"][1] - ci["map50_ci"][0])
    assert widths[1] < widths[0] * 0.6, widths  # ~1/sqrt(10) in theory
    again = bootstrap_ci(gt, dets, resamples=300, seed=0)
    assert again == ci  # seeded


def test_no_resamples_and_no_detections():
    gt, dets = synthetic(5, seed=1)
    assert bootstrap_ci(gt, dets, resamples=0, seed=0) == {}
    assert bootstrap_ci(gt, [], resamples=10, seed=0)["map50_ci"] == [0.0, 0.0]
