"""Non-maximum suppression in NumPy: hard (torchvision's ``batched_nms``) and soft-NMS.

Boxes are ``[N, 4]`` ``xyxy`` pixels in float32 (as detectors return them); scores ``[N]``
float32. The one soft-NMS of detflow: the PyTorch post-processing
(:mod:`detflow.model.postprocess`) and the ONNX runtime path
(:mod:`detflow.deploy.onnx_postprocess`, no torch) both call :func:`soft_nms`.
"""

from __future__ import annotations

import numpy as np

from detflow.core.boxes import box_iou
from detflow.core.errors import require_choice

SOFT_METHODS = ("gaussian", "linear")


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray | None, iou_threshold: float
) -> np.ndarray:
    """Indices kept by hard NMS, best score first; ``labels`` None = class-agnostic, else a
    box suppresses only boxes of its own label (torchvision's ``batched_nms``)."""
    if labels is not None:
        boxes = separate_classes(boxes, labels)
    order = np.argsort(-scores, kind="stable")
    iou = box_iou(boxes[order], boxes[order], dtype=np.float32)
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
    """Soft-NMS (Bodla et al., 2017) over ``[N, 4]`` ``xyxy`` boxes, class-agnostic.

    Repeatedly keeps the best-scoring remaining box and decays the others' scores by its
    IoU with them: ``gaussian`` × exp(-IoU²/sigma); ``linear`` × (1 - IoU) where
    IoU > ``iou_threshold``. Stops at ``max_detections`` kept or when the best remaining
    score is below ``score_threshold``. Returns (kept indices, best first; ``[N]`` decayed
    float32 scores, indexable by them).
    """
    require_choice("soft_nms method", method, SOFT_METHODS)
    iou = box_iou(boxes, boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1).copy()
    alive, keep = np.ones(len(scores), bool), []
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
