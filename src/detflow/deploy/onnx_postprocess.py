"""The shared ``postprocess.*`` step in NumPy, for the ONNX runtime path (no torch).

The same operations as :func:`detflow.model.postprocess.apply_postprocess` (which uses
torchvision's ``nms``/``batched_nms`` in PyTorch): score threshold, background dropped, hard
NMS (class-aware or not) or soft-NMS (both from :mod:`detflow.core.nms`, the one NumPy NMS
that PyTorch's step shares for soft-NMS), then the best ``max_detections``. Boxes are ``[N, 4]``
``xyxy`` pixels in float32, as the graph returns them; the export stage's parity check
compares the two on real images.
"""

from __future__ import annotations

import numpy as np

from detflow.core.nms import batched_nms, separate_classes, soft_nms
from detflow.model.postprocess_config import PostprocessOptions


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
