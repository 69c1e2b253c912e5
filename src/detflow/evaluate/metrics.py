"""Detection metrics: COCO's box statistics via pycocotools (the reference COCOeval), and
precision, recall, F1 and a confusion matrix from one greedy matching at a fixed IoU.

Predictions of one image: ``{"boxes": [N, 4] xyxy px, "labels": [N] category ids,
"scores": [N]}`` (numpy). COCO results: ``{"image_id", "category_id", "bbox": xywh px,
"score"}``. Ground truth: a canonical dataset dict (annotations in COCO ``xywh`` px,
category ids 1..C).

Ignored ground truth (VOC ``difficult``, COCO crowd: :func:`detflow.data.manifest.is_ignored`)
is neither a hit nor a miss: COCOeval gets it as a crowd region (``iscrowd: 1``), exactly as
pycocotools ignores crowd regions, and in the matching below a detection that matches no
real box but an ignored one (same class, IoU >= ``iou``) is left out, and ignored boxes are
never missed.

Matching (P/R/F1, confusion matrix): per image and class, detections in descending score
take the unmatched ground-truth box of their class with the highest IoU, if that IoU is
>= ``iou`` (COCO's rule at one IoU). A detection is then a true positive at every score
threshold at or below its score, so one matching gives P/R/F1 at any threshold.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detflow.core.boxes import box_iou, xywh_to_xyxy, xyxy_to_xywh
from detflow.data import manifest

STAT_NAMES = (
    "map50_95",
    "map50",
    "map75",
    "map_small",
    "map_medium",
    "map_large",
    "ar1",
    "ar10",
    "ar100",
    "ar_small",
    "ar_medium",
    "ar_large",
)
CONFIDENCE_GRID = np.round(np.linspace(0.0, 1.0, 101), 2)  # thresholds of the P/R/F1 curves
BACKGROUND = "background"  # the confusion matrix's extra class: missed / false detections


@dataclass
class Evaluation:
    """Everything the evaluate stage reports.

    ``metrics``: JSON-ready figures (DVC metrics). ``pr_curves``: class name →
    ``{"recall": [101], "precision": [101]}``, COCOeval's interpolated curve at IoU 0.5.
    ``confidence_curve``: ``{"confidence", "precision", "recall", "f1"}`` per threshold of
    :data:`CONFIDENCE_GRID`, all classes pooled. ``confusion``: ``[C + 1, C + 1]`` counts,
    rows actual, columns predicted, index C = background; ``labels`` names its rows.
    ``predictions``: image id → that image's predictions.
    """

    metrics: dict
    pr_curves: dict[str, dict[str, list[float]]]
    confidence_curve: list[dict]
    confusion: np.ndarray
    labels: list[str]
    predictions: dict[int, dict]


def to_coco_results(image_id: int, boxes, labels, scores) -> list[dict]:
    """One image's ``xyxy`` pixel boxes, labels and scores → COCO result records."""
    xywh = xyxy_to_xywh(np.asarray(boxes, dtype=float).reshape(-1, 4))
    return [
        {
            "image_id": int(image_id),
            "category_id": int(label),
            "bbox": [float(v) for v in box],
            "score": float(score),
        }
        for box, label, score in zip(xywh, labels, scores, strict=True)
    ]


def coco_metrics(ground_truth: dict, detections: list[dict]) -> dict:
    """COCO's 12 box statistics plus per-class AP (mAP50-95 and mAP50) for a dataset."""
    return coco_evaluate(ground_truth, detections)[0]


def coco_evaluate(ground_truth: dict, detections: list[dict]) -> tuple[dict, dict]:
    """(COCO statistics with per-class AP, per-class PR curves at IoU 0.5) via COCOeval.

    Statistics COCOeval leaves undefined (-1: no ground truth in an area range) are 0.
    Classes without ground truth have no AP (COCO leaves them out of the mean) and are
    left out of the per-class figures and curves.
    """
    gt = coco_ground_truth(ground_truth)
    names = {c["id"]: c["name"] for c in ground_truth["categories"]}
    present = sorted(
        {a["category_id"] for a in ground_truth["annotations"] if not manifest.is_ignored(a)}
    )
    with contextlib.redirect_stdout(io.StringIO()):
        if not detections or not present:
            metrics = dict.fromkeys(STAT_NAMES, 0.0)
            for key in ("per_class_map50_95", "per_class_map50"):
                metrics[key] = {names[c]: 0.0 for c in present}
            recall = COCOeval().params.recThrs.tolist()
            zeros = [0.0] * len(recall)
            return metrics, {names[c]: {"recall": recall, "precision": zeros} for c in present}
        evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: max(float(v), 0.0) for name, v in zip(STAT_NAMES, evaluator.stats, strict=True)}
    precision = evaluator.eval["precision"]  # [iou, recall, class, area, max dets]
    stats["per_class_map50_95"], stats["per_class_map50"], curves = {}, {}, {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        if cat_id not in present:
            continue
        name = names[cat_id]
        stats["per_class_map50_95"][name] = float(precision[:, :, k, 0, -1].mean())
        stats["per_class_map50"][name] = float(precision[0, :, k, 0, -1].mean())
        curves[name] = {
            "recall": evaluator.params.recThrs.tolist(),
            "precision": precision[0, :, k, 0, -1].tolist(),
        }
    return stats, curves


def coco_ground_truth(ground_truth: dict) -> COCO:
    """A pycocotools ``COCO`` index of a canonical dataset; ignored boxes become crowd
    regions (``iscrowd: 1``), which COCOeval ignores."""
    gt = COCO()
    gt.dataset = {
        "images": [
            {"id": im["id"], "width": im["width"], "height": im["height"]}
            for im in ground_truth["images"]
        ],
        "annotations": [
            {**a, "iscrowd": 1} if manifest.is_ignored(a) else a
            for a in ground_truth["annotations"]
        ],
        "categories": ground_truth["categories"],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def match_image(gt_boxes, gt_labels, boxes, labels, scores, *, iou: float) -> np.ndarray:
    """Index of the ground-truth box each detection matches (-1: none), by the module's rule.

    ``gt_boxes`` ``[M, 4]`` and ``boxes`` ``[N, 4]`` are ``xyxy`` px; returns ``[N]`` int.
    """
    gt_labels, labels = np.asarray(gt_labels).reshape(-1), np.asarray(labels).reshape(-1)
    overlaps = box_iou(boxes, gt_boxes)  # [N, M]
    taken = np.zeros(len(gt_labels), dtype=bool)
    matched = np.full(len(labels), -1, dtype=np.int64)
    for d in np.argsort(-np.asarray(scores, dtype=float).reshape(-1), kind="stable"):
        allowed = (gt_labels == labels[d]) & ~taken & (overlaps[d] >= iou)
        if allowed.any():
            g = int(np.argmax(np.where(allowed, overlaps[d], -1.0)))
            matched[d], taken[g] = g, True
    return matched


def prf(true_positives: int, detections: int, ground_truth: int) -> dict:
    """Precision, recall and F1 from counts; 0 where a denominator is 0."""
    precision = true_positives / detections if detections else 0.0
    recall = true_positives / ground_truth if ground_truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def f1_optimal(scores, true_positive, ground_truth: int) -> dict:
    """The score threshold with the highest F1 (the highest such threshold on ties) and its
    P/R/F1; detections count when their score is >= the threshold. Threshold None when
    there are no detections."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    scores, hits = np.asarray(scores, dtype=float)[order], np.asarray(true_positive)[order]
    if scores.size == 0:
        return {"threshold": None, **prf(0, 0, ground_truth)}
    tp = np.cumsum(hits)
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))  # last of each tie
    candidates = [prf(int(tp[i]), i + 1, ground_truth) for i in ends]
    best = int(np.argmax([c["f1"] for c in candidates]))
    return {"threshold": float(scores[ends[best]]), **candidates[best]}


def confidence_curve(scores, true_positive, ground_truth: int, grid=CONFIDENCE_GRID) -> list:
    """P/R/F1 at each threshold of ``grid`` (detections with score >= threshold)."""
    scores, hits = np.asarray(scores, dtype=float), np.asarray(true_positive, dtype=bool)
    rows = []
    for threshold in grid:
        kept = scores >= threshold
        counts = prf(int(hits[kept].sum()), int(kept.sum()), ground_truth)
        rows.append({"confidence": float(threshold), **counts})
    return rows


def confusion_matrix(
    ground_truth: dict, predictions: dict[int, dict], *, score_threshold: float, iou: float
) -> np.ndarray:
    """``[C + 1, C + 1]`` counts (rows actual class, columns predicted; index C background)
    of the detections scoring >= ``score_threshold``.

    Per image: same-class matches first (the module's rule: the diagonal equals the true
    positives), then the remaining detections and boxes pair up greedily by IoU (>= ``iou``)
    across classes; what is left is a missed box (actual, background) or a false detection
    (background, predicted).
    """
    classes = len(ground_truth["categories"])
    matrix = np.zeros((classes + 1, classes + 1), dtype=np.int64)
    for image_id, (gt_boxes, gt_labels, ignored) in _ground_truth(ground_truth).items():
        pred = _without_ignored_hits(predictions.get(image_id), gt_boxes, gt_labels, ignored, iou)
        gt_boxes, gt_labels = gt_boxes[~ignored], gt_labels[~ignored]
        kept = np.asarray(pred["scores"], dtype=float) >= score_threshold
        boxes = np.asarray(pred["boxes"], dtype=float).reshape(-1, 4)[kept]
        labels = np.asarray(pred["labels"]).reshape(-1)[kept]
        scores = np.asarray(pred["scores"], dtype=float)[kept]
        matched = match_image(gt_boxes, gt_labels, boxes, labels, scores, iou=iou)
        np.add.at(matrix, (labels[matched >= 0] - 1, labels[matched >= 0] - 1), 1)
        free_gt = np.setdiff1d(np.arange(len(gt_labels)), matched[matched >= 0])
        free_det = np.flatnonzero(matched < 0)
        overlaps = box_iou(boxes[free_det], gt_boxes[free_gt])
        for d, g in _pairs_by_iou(overlaps, iou):
            matrix[gt_labels[free_gt[g]] - 1, labels[free_det[d]] - 1] += 1
            free_gt[g], free_det[d] = -1, -1
        np.add.at(matrix, (gt_labels[free_gt[free_gt >= 0]] - 1, classes), 1)
        np.add.at(matrix, (classes, labels[free_det[free_det >= 0]] - 1), 1)
    return matrix


def _pairs_by_iou(overlaps: np.ndarray, iou: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs with overlap >= ``iou``, highest overlap first."""
    rows, cols = np.nonzero(overlaps >= iou)
    order = np.argsort(-overlaps[rows, cols], kind="stable")
    used_rows, used_cols, pairs = set(), set(), []
    for r, c in zip(rows[order], cols[order], strict=True):
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((int(r), int(c)))
    return pairs


def _ground_truth(dataset: dict) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Image id → (``[M, 4]`` xyxy px boxes, ``[M]`` category ids, ``[M]`` ignored flags),
    every image listed."""
    by_image = manifest.annotations_by_image(dataset)
    out = {}
    for image in dataset["images"]:
        anns = by_image.get(image["id"], [])
        boxes = xywh_to_xyxy([a["bbox"] for a in anns]).reshape(-1, 4)
        labels = np.array([a["category_id"] for a in anns], dtype=np.int64)
        ignored = np.array([manifest.is_ignored(a) for a in anns], dtype=bool)
        out[image["id"]] = (boxes, labels, ignored)
    return out


def _without_ignored_hits(pred, gt_boxes, gt_labels, ignored, iou: float) -> dict:
    """One image's predictions less those that match no real ground-truth box but an
    ignored one (same class, IoU >= ``iou``): they are neither hits nor false detections."""
    pred = pred or empty_predictions()
    if not ignored.any():
        return pred
    boxes = np.asarray(pred["boxes"], dtype=float).reshape(-1, 4)
    labels = np.asarray(pred["labels"]).reshape(-1)
    scores = np.asarray(pred["scores"], dtype=float).reshape(-1)
    real = match_image(gt_boxes[~ignored], gt_labels[~ignored], boxes, labels, scores, iou=iou)
    overlaps = box_iou(boxes, gt_boxes[ignored])  # [N, ignored]
    same = labels[:, None] == gt_labels[ignored][None, :]
    on_ignored = ((overlaps >= iou) & same).any(axis=1) & (real < 0)
    return {
        "boxes": boxes[~on_ignored],
        "labels": labels[~on_ignored],
        "scores": scores[~on_ignored],
    }


def empty_predictions() -> dict:
    """No detections, in the shape of one image's predictions."""
    return {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "scores": np.zeros(0)}


def evaluate_predictions(
    ground_truth: dict, predictions: dict[int, dict], *, score_threshold: float, iou: float = 0.5
) -> Evaluation:
    """COCO statistics, P/R/F1 at ``score_threshold`` and at the F1-optimal threshold (all
    classes pooled, and per class), curves and the confusion matrix at ``iou``
    (:class:`detflow.evaluate.inference.EvaluateOptions` checks both)."""
    names = manifest.class_names(ground_truth)
    detections, scores, hits, labels, gt_counts = _pool(ground_truth, predictions, iou=iou)
    metrics, pr_curves = coco_evaluate(ground_truth, detections)
    kept, total = scores >= score_threshold, int(gt_counts.sum())
    metrics.update(prf(int(hits[kept].sum()), int(kept.sum()), total))
    metrics["f1_best"] = f1_optimal(scores, hits, total)
    metrics["per_class_at_threshold"] = {}
    for k, name in enumerate(names, start=1):
        mine = kept & (labels == k)
        metrics["per_class_at_threshold"][name] = prf(
            int(hits[mine].sum()), int(mine.sum()), int(gt_counts[k])
        )
    matrix = confusion_matrix(ground_truth, predictions, score_threshold=score_threshold, iou=iou)
    metrics["missed"] = int(matrix[:-1, -1].sum())
    metrics["false_detections"] = int(matrix[-1].sum())
    metrics["images"], metrics["boxes"] = len(ground_truth["images"]), total
    return Evaluation(
        metrics=metrics,
        pr_curves=pr_curves,
        confidence_curve=confidence_curve(scores, hits, total),
        confusion=matrix,
        labels=[*names, BACKGROUND],
        predictions=predictions,
    )


def _pool(ground_truth: dict, predictions: dict[int, dict], *, iou: float):
    """All images' COCO results, and pooled detection scores, true-positive flags and
    labels, plus ground-truth boxes per category id (``[C + 1]``, index 0 unused)."""
    detections, scores, hits, labels = [], [np.zeros(0)], [np.zeros(0, bool)], []
    gt_counts = np.zeros(len(ground_truth["categories"]) + 1, dtype=np.int64)
    for image_id, (gt_boxes, gt_labels, ignored) in _ground_truth(ground_truth).items():
        raw = predictions.get(image_id) or empty_predictions()
        detections += to_coco_results(image_id, raw["boxes"], raw["labels"], raw["scores"])
        pred = _without_ignored_hits(raw, gt_boxes, gt_labels, ignored, iou)
        gt_boxes, gt_labels = gt_boxes[~ignored], gt_labels[~ignored]
        boxes, classes, conf = pred["boxes"], pred["labels"], pred["scores"]
        matched = match_image(gt_boxes, gt_labels, boxes, classes, conf, iou=iou)
        scores.append(np.asarray(conf, dtype=float).reshape(-1))
        hits.append(matched >= 0)
        labels.append(np.asarray(classes, dtype=np.int64).reshape(-1))
        gt_counts += np.bincount(gt_labels, minlength=len(gt_counts))
    labels.append(np.zeros(0, np.int64))
    return detections, *map(np.concatenate, (scores, hits, labels)), gt_counts


def run_predictor(predict_one: Callable, dataset) -> tuple[dict[int, dict], list[float]]:
    """Run ``predict_one`` on every image of ``dataset``, one at a time; returns (image id →
    numpy predictions, per-image wall time in ms).

    ``predict_one([3, H, W] float tensor)`` returns ``boxes`` (xyxy px), ``labels``,
    ``scores``; ``dataset`` is a :class:`detflow.data.torch_dataset.DetectionDataset`.
    """
    predictions, latencies = {}, []
    for index in range(len(dataset)):
        image, target = dataset[index]
        start = time.perf_counter()
        out = predict_one(image)
        latencies.append((time.perf_counter() - start) * 1000)
        predictions[target["image_id"]] = {
            "boxes": np.asarray(out["boxes"], dtype=float).reshape(-1, 4),
            "labels": np.asarray(out["labels"], dtype=np.int64).reshape(-1),
            "scores": np.asarray(out["scores"], dtype=float).reshape(-1),
        }
    return predictions, latencies


def latency_summary(latencies: list[float]) -> dict:
    """``latency_ms_p50`` and ``latency_ms_p95`` (0 when there are none)."""
    return {
        f"latency_ms_p{q}": float(np.percentile(latencies, q)) if latencies else 0.0
        for q in (50, 95)
    }


def evaluate_predictor(predict_one: Callable, dataset) -> dict:
    """COCO metrics and batch-1 latency (ms p50/p95) of ``predict_one`` over ``dataset``
    (see :func:`run_predictor`)."""
    predictions, latencies = run_predictor(predict_one, dataset)
    detections = [
        record
        for image_id, p in predictions.items()
        for record in to_coco_results(image_id, p["boxes"], p["labels"], p["scores"])
    ]
    return {**coco_metrics(dataset.dataset, detections), **latency_summary(latencies)}
