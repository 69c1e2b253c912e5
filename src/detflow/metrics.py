"""COCO detection metrics via pycocotools (the reference COCOeval).

Detections are COCO results: ``{"image_id", "category_id", "bbox": xywh pixels, "score"}``.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detflow.boxes import xyxy_to_xywh

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
    """COCO's 12 box statistics plus per-class AP (mAP50-95) for a canonical dataset."""
    gt = COCO()
    gt.dataset = {
        "images": [
            {"id": im["id"], "width": im["width"], "height": im["height"]}
            for im in ground_truth["images"]
        ],
        "annotations": ground_truth["annotations"],
        "categories": ground_truth["categories"],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not detections or not ground_truth["annotations"]:
            return {
                **dict.fromkeys(STAT_NAMES, 0.0),
                "per_class_map50_95": {c["name"]: 0.0 for c in ground_truth["categories"]},
            }
        evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: max(float(v), 0.0) for name, v in zip(STAT_NAMES, evaluator.stats, strict=True)}
    stats["per_class_map50_95"] = _per_class(evaluator, ground_truth["categories"])
    return stats


def _per_class(evaluator: COCOeval, categories) -> dict:
    precision = evaluator.eval["precision"]  # [iou, recall, class, area, maxdets]
    out = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        name = next(c["name"] for c in categories if c["id"] == cat_id)
        out[name] = float(values.mean()) if values.size else 0.0
    return out


def evaluate_predictor(predict_one: Callable, dataset) -> dict:
    """COCO metrics and batch-1 latency (ms p50/p95) of ``predict_one`` over ``dataset``.

    ``predict_one([3, H, W] float tensor)`` returns numpy ``boxes`` (xyxy px), ``labels``,
    ``scores``; ``dataset`` is a :class:`detflow.datasets.DetectionDataset`.
    """
    detections, latencies = [], []
    for index in range(len(dataset)):
        image, target = dataset[index]
        start = time.perf_counter()
        out = predict_one(image)
        latencies.append((time.perf_counter() - start) * 1000)
        detections += to_coco_results(
            target["image_id"], out["boxes"], out["labels"], out["scores"]
        )
    metrics = coco_metrics(dataset.dataset, detections)
    metrics["latency_ms_p50"] = float(np.percentile(latencies, 50)) if latencies else 0.0
    metrics["latency_ms_p95"] = float(np.percentile(latencies, 95)) if latencies else 0.0
    return metrics
