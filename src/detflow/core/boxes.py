"""Box formats and conversions.

Formats used in detflow, all as float arrays of shape ``(N, 4)``:

- ``xyxy``: absolute pixels ``(x_min, y_min, x_max, y_max)`` — torchvision and ONNX outputs.
- ``xywh``: COCO, absolute pixels ``(x_min, y_min, width, height)`` — the canonical dataset.
- ``cxcywh_norm``: YOLO, ``(center_x, center_y, width, height)`` divided by image size.
"""

from __future__ import annotations

import numpy as np


def _as_boxes(boxes, dtype=np.float64) -> np.ndarray:
    return np.asarray(boxes, dtype=dtype).reshape(-1, 4)


def xywh_to_xyxy(boxes) -> np.ndarray:
    """COCO ``xywh`` (pixels) → ``xyxy`` (pixels)."""
    b = _as_boxes(boxes)
    return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)


def xyxy_to_xywh(boxes) -> np.ndarray:
    """``xyxy`` (pixels) → COCO ``xywh`` (pixels)."""
    b = _as_boxes(boxes)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def yolo_to_xyxy(boxes, *, width: int, height: int) -> np.ndarray:
    """YOLO ``cxcywh_norm`` → ``xyxy`` pixels of an image ``width`` × ``height``."""
    b = _as_boxes(boxes)
    cx, cy = b[:, 0] * width, b[:, 1] * height
    w, h = b[:, 2] * width, b[:, 3] * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def xyxy_to_yolo(boxes, *, width: int, height: int) -> np.ndarray:
    """``xyxy`` pixels → YOLO ``cxcywh_norm`` for an image ``width`` × ``height``."""
    b = _as_boxes(boxes)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return np.stack(
        [(b[:, 0] + w / 2) / width, (b[:, 1] + h / 2) / height, w / width, h / height], axis=1
    )


def box_intersection(a, b, *, dtype=np.float64) -> np.ndarray:
    """Pairwise intersection areas of ``xyxy`` boxes: ``(N, 4)`` × ``(M, 4)`` → ``(N, M)``,
    computed in ``dtype``."""
    a, b = _as_boxes(a, dtype), _as_boxes(b, dtype)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    return np.clip(rb - lt, 0, None).prod(axis=2)


def box_area(boxes, *, dtype=np.float64) -> np.ndarray:
    """Areas of ``xyxy`` boxes: ``(N, 4)`` → ``(N,)`` (0 for an empty or inverted box)."""
    b = _as_boxes(boxes, dtype)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a, b, *, dtype=np.float64) -> np.ndarray:
    """Pairwise IoU of ``xyxy`` pixel boxes: ``(N, 4)`` × ``(M, 4)`` → ``(N, M)``, computed in
    ``dtype`` (``np.float32``: the arithmetic of ``torchvision.ops.box_iou``); 0 where both
    boxes are empty. The one IoU of detflow: data, evaluate and the ONNX runtime use it."""
    inter = box_intersection(a, b, dtype=dtype)
    area_a, area_b = box_area(a, dtype=dtype), box_area(b, dtype=dtype)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(dtype)


def box_ios(a, b) -> np.ndarray:
    """Pairwise intersection over the smaller box's area of ``xyxy`` boxes: ``(N, 4)`` ×
    ``(M, 4)`` → ``(N, M)``; 1 when one box lies inside the other (a box cut by a tile edge
    inside the whole box), where IoU is only the cut share."""
    inter = box_intersection(a, b)
    smaller = np.minimum(box_area(a)[:, None], box_area(b)[None, :])
    return np.where(smaller > 0, inter / np.where(smaller > 0, smaller, 1), 0.0)


def exif_orient_xyxy(boxes, *, orientation: int, width: int, height: int) -> np.ndarray:
    """Map ``xyxy`` pixel boxes of a stored ``width`` × ``height`` image through EXIF
    ``orientation`` (1..8), as ``PIL.ImageOps.exif_transpose`` maps its pixels."""
    b = _as_boxes(boxes)
    w, h = float(width), float(height)
    corner_maps = {
        1: lambda x, y: (x, y),
        2: lambda x, y: (w - x, y),
        3: lambda x, y: (w - x, h - y),
        4: lambda x, y: (x, h - y),
        5: lambda x, y: (y, x),
        6: lambda x, y: (h - y, x),
        7: lambda x, y: (h - y, w - x),
        8: lambda x, y: (y, w - x),
    }
    if orientation not in corner_maps:
        return b.copy()
    xa, ya = corner_maps[orientation](b[:, 0], b[:, 1])
    xb, yb = corner_maps[orientation](b[:, 2], b[:, 3])
    return np.stack(
        [np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb)], axis=1
    )


def scale_xyxy(
    boxes, *, scale_x: float, scale_y: float, offset_x: float = 0.0, offset_y: float = 0.0
) -> np.ndarray:
    """Map ``xyxy`` pixel boxes through ``x' = x * scale_x + offset_x`` (same for y)."""
    b = _as_boxes(boxes).copy()
    b[:, [0, 2]] = b[:, [0, 2]] * scale_x + offset_x
    b[:, [1, 3]] = b[:, [1, 3]] * scale_y + offset_y
    return b
