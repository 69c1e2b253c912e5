"""Confidence intervals for COCO mAP: a group-aware bootstrap over a split's images.

pycocotools matches detections to ground truth once per image (``COCOeval.evaluate``); its
``accumulate`` then pools the per-image results into precision-recall curves. A resample of
the split only changes which images are pooled and how often, so the matching is done once
and :func:`accumulate` redoes COCO's pooling (the same sort, cumulative sums and 101-point
interpolated precision, vectorised over IoU thresholds) for each resample: equal to
pycocotools on the identity resample (tests/evaluate/test_bootstrap.py).

Resampling draws the split's *groups* (``images[i]["group"]``: burst shots and
near-duplicates, see :mod:`detflow.data.split`) with replacement, as many as there are, and
takes every image of a drawn group: images of one group are not independent, so drawing them
one by one would give too narrow intervals. Images without a group are a group each.
Ground truth: a canonical dataset dict (COCO ``xywh`` px); detections: COCO results.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from pycocotools.cocoeval import COCOeval

from detflow.data import manifest
from detflow.evaluate.metrics import coco_ground_truth

CONFIDENCE = 0.95


@dataclass(frozen=True)
class MatchTable:
    """COCOeval's per-image matching (area ``all``, the largest ``maxDets``), per class.

    ``per_class[k]``: one entry per image index (``None``: no ground truth and no detection
    of class k there) of ``(scores [D], matched [T, D] bool, ignored [T, D] bool, gt [G]
    count of non-ignored ground truth)``; ``recall_thresholds`` ``[R]``; ``classes``: names
    in category order; ``groups``: ``[I]`` group index of each image (images in id order).
    """

    per_class: list[list[tuple | None]]
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    classes: list[str]
    groups: np.ndarray


def match_table(ground_truth: dict, detections: list[dict]) -> MatchTable:
    """Run pycocotools' per-image matching once (``COCOeval.evaluate``); ``detections``
    must not be empty."""
    gt = coco_ground_truth(ground_truth)
    image_ids = sorted(im["id"] for im in ground_truth["images"])  # COCOeval's order
    names = {c["id"]: c["name"] for c in ground_truth["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
    params = evaluator.params
    max_det, areas, count = params.maxDets[-1], len(params.areaRng), len(image_ids)
    per_class = []
    for k in range(len(params.catIds)):
        rows = []
        for i in range(count):
            e = evaluator.evalImgs[k * areas * count + i]  # area index 0: all
            if e is None:
                rows.append(None)
                continue
            rows.append(
                (
                    np.asarray(e["dtScores"][:max_det], dtype=float),
                    np.asarray(e["dtMatches"][:, :max_det]) > 0,
                    np.asarray(e["dtIgnore"][:, :max_det], dtype=bool),
                    int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)),
                )
            )
        per_class.append(rows)
    return MatchTable(
        per_class=per_class,
        iou_thresholds=np.asarray(params.iouThrs),
        recall_thresholds=np.asarray(params.recThrs),
        classes=[names[c] for c in params.catIds],
        groups=_group_index(ground_truth, image_ids),
    )


def _group_index(ground_truth: dict, image_ids: list[int]) -> np.ndarray:
    """``[I]`` group number of each image of ``image_ids`` (its ``group`` key, else the
    image alone)."""
    by_id = {image["id"]: image for image in ground_truth["images"]}
    seen: dict[object, int] = {}
    out = []
    for image in (by_id[i] for i in image_ids):
        key = image.get("group")
        key = ("image", image["id"]) if key in (None, "") else ("group", key)
        out.append(seen.setdefault(key, len(seen)))
    return np.asarray(out, dtype=np.int64)


def accumulate(table: MatchTable, counts: np.ndarray) -> np.ndarray:
    """COCO's interpolated precision ``[T, R, K]`` (-1: class without ground truth) of the
    images taken ``counts[i]`` times each (``[I]`` non-negative ints)."""
    shape = (len(table.iou_thresholds), len(table.recall_thresholds), len(table.per_class))
    precision = -np.ones(shape)
    for k, rows in enumerate(table.per_class):
        picked = [
            rows[i]
            for i in np.flatnonzero(counts)
            if rows[i] is not None
            for _ in range(int(counts[i]))
        ]
        npig = sum(row[3] for row in picked)
        if npig == 0:
            continue
        scores = np.concatenate([row[0] for row in picked])
        order = np.argsort(-scores, kind="mergesort")
        matched = np.concatenate([row[1] for row in picked], axis=1)[:, order]
        ignored = np.concatenate([row[2] for row in picked], axis=1)[:, order]
        precision[:, :, k] = _interpolated_precision(matched, ignored, npig, table)
    return precision


def _interpolated_precision(matched, ignored, npig: int, table: MatchTable) -> np.ndarray:
    """``[T, R]`` precision at each recall threshold, as ``COCOeval.accumulate``."""
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=float)
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=float)
    out = np.zeros((len(table.iou_thresholds), len(table.recall_thresholds)))
    if tp.shape[1] == 0:
        return out
    recall = tp / npig
    precision = tp / (fp + tp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    for t in range(len(table.iou_thresholds)):
        index = np.searchsorted(recall[t], table.recall_thresholds, side="left")
        valid = index < recall.shape[1]
        out[t, valid] = envelope[t, index[valid]]
    return out


def summary(precision: np.ndarray, classes: list[str]) -> dict:
    """mAP50-95, mAP50 and per-class AP50 of a ``[T, R, K]`` precision array (classes
    without ground truth left out, as COCO; NaN when no class has any)."""
    present = precision[0, 0, :] > -1
    out = {
        "map50_95": float(precision[:, :, present].mean()) if present.any() else float("nan"),
        "map50": float(precision[0, :, present].mean()) if present.any() else float("nan"),
    }
    out["per_class_map50"] = {
        name: float(precision[0, :, k].mean()) if present[k] else float("nan")
        for k, name in enumerate(classes)
    }
    return out


def bootstrap_ci(ground_truth: dict, detections: list[dict], *, resamples: int, seed: int) -> dict:
    """95 % percentile intervals of mAP50, mAP50-95 and per-class AP50 over ``resamples``
    group resamples (seeded): ``{"map50_ci": [lo, hi], "map50_95_ci": [lo, hi],
    "per_class_map50_ci": {name: [lo, hi]}, "bootstrap": {...}}``; {} when ``resamples`` is 0.
    A class absent from a resample is left out of that resample's figures."""
    if resamples <= 0 or not ground_truth["images"]:
        return {}
    if not detections:  # nothing found: every resample scores 0
        names = manifest.class_names(ground_truth)
        return {
            "map50_ci": [0.0, 0.0],
            "map50_95_ci": [0.0, 0.0],
            "per_class_map50_ci": {n: [0.0, 0.0] for n in names},
            "bootstrap": {"resamples": resamples, "seed": seed},
        }
    table = match_table(ground_truth, detections)
    rng = np.random.default_rng(seed)
    n_groups = int(table.groups.max()) + 1
    draws = []
    for _ in range(resamples):
        picked = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        draws.append(summary(accumulate(table, picked[table.groups]), table.classes))
    present = {
        manifest.class_names(ground_truth)[c - 1]
        for c in {a["category_id"] for a in ground_truth["annotations"]}
    }
    return {
        "map50_ci": _interval([d["map50"] for d in draws]),
        "map50_95_ci": _interval([d["map50_95"] for d in draws]),
        "per_class_map50_ci": {
            name: _interval([d["per_class_map50"][name] for d in draws])
            for name in table.classes
            if name in present
        },
        "bootstrap": {"resamples": resamples, "seed": seed, "groups": n_groups},
    }


def _interval(values: list[float]) -> list[float] | None:
    """The central :data:`CONFIDENCE` percentile interval of the finite values."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [round(float(low), 4), round(float(high), 4)]
