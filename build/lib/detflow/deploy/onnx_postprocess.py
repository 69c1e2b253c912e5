"""The shared ``postprocess.*`` step in NumPy, for the ONNX runtime path (no torch).

The same operations as :func:`detflow.model.postprocess.apply_postprocess` (which uses
torchvision's ``nms``/``batched_nms`` in PyTorch): score threshold, background dropped, hard
NMS (class-aware or not) or soft-NMS, then the best ``max_detections``. Boxes are ``[N, 4]``
``xyxy`` pixels in float32, as the graph returns them; the export stage's parity check
compares the two on real images.
"""

from __future__ import annotations

import numpy as np

from detflow.core.errors import require_choice
from detflow.model.postprocess_config import SOFT_NMS_METHODS, PostprocessOptions


def apply_postprocess(boxes, scores, labels, *, config: PostprocessOptions) -> dict:
    """Score threshold, NMS (hard or soft, class-aware or not) and top-k on one image.

    ``boxes``: ``[N, 4]`` ``xyxy`` pixels; ``scores``: ``[N]``; ``labels``: ``[N]`` int.
    Returns ``{"boxes", "labels", "scores"}`` numpy arrays, best score first.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    keep = np.flatnonzero((scores >= config.score_threshold) & (labels >= 1))
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    class_aware = config.nms == "class_aware"
    if config.soft_nms == "none":
        keep = batched_nms(boxes, scores, labels if class_aware else None, config.nms_iou)
    else:
        keep, scores = soft_nms(
            separate_classes(boxes, labels) if class_aware else boxes,
            scores,
            method=config.soft_nms,
            sigma=float(config.soft_nms_sigma),
            iou_threshold=float(config.nms_iou),
            score_threshold=float(config.score_threshold),
            max_detections=int(config.max_detections),
        )
    keep = keep[: int(config.max_detections)]
    return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, M]`` IoU of ``[N, 4]`` and ``[M, 4]`` ``xyxy`` boxes (float32, as torchvision)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inter / (area_a[:, None] + area_b[None, :] - inter)).astype(np.float32)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray | None, iou_threshold: float
) -> np.ndarray:
    """Indices kept by hard NMS, best score first; ``labels`` None = class-agnostic, else a
    box suppresses only boxes of its own label (torchvision's ``batched_nms``)."""
    if labels is not None:
        boxes = separate_classes(boxes, labels)
    order = np.argsort(-scores, kind="stable")
    iou = box_iou(boxes[order], boxes[order])
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed |= iou[i] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def soft_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    method: str,
    sigma: float,
    iou_threshold: float,
    score_threshold: float,
    max_detections: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Soft-NMS (Bodla et al., 2017) over ``[N, 4]`` ``xyxy`` boxes, class-agnostic; the
    algorithm of :func:`detflow.model.postprocess.soft_nms`. Returns (kept indices, best
    first; ``[N]`` decayed scores, indexable by them)."""
    require_choice("soft_nms method", method, SOFT_NMS_METHODS[1:])
    iou = box_iou(boxes, boxes)
    scores, alive, keep = scores.astype(np.float32).copy(), np.ones(len(scores), bool), []
    for _ in range(min(len(scores), max_detections)):
        best = int(np.where(alive, scores, np.float32(-1.0)).argmax())
        if scores[best] < score_threshold:
            break
        keep.append(best)
        alive[best] = False
        overlap = iou[best]
        if method == "gaussian":
            decay = np.exp(-(overlap**2) / np.float32(sigma)).astype(np.float32)
        else:
            decay = np.where(overlap > iou_threshold, 1.0 - overlap, 1.0).astype(np.float32)
        scores = np.where(alive, scores * decay, scores)
    return np.asarray(keep, dtype=np.int64), scores


def separate_classes(boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Shift each class's boxes apart so boxes of different classes never overlap (the
    coordinate trick of torchvision's ``batched_nms``)."""
    if boxes.size == 0:
        return boxes
    offset = labels.astype(boxes.dtype) * (boxes.max() + 1)
    return boxes + offset[:, None]
