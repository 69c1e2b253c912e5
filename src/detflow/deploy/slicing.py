"""Sliced inference: a large image as tiles through the model, merged into one set of boxes.

:func:`sliced_predict` cuts an ``[H, W, 3]`` uint8 RGB image into the tile grid of
:func:`detflow.data.tiles.tile_windows` (``overlap`` in pixels; tiles at an edge smaller than
``size`` are padded at the bottom and right with black), runs the tiles of the image through
the model's batch axis in chunks of ``batch_size`` (memory bounded by the chunk, not the
image), optionally adds the whole image downscaled to ``size`` on its long side, shifts
every box back to ``xyxy`` pixels of the full image and merges the detections of all tiles,
class by class (:func:`detflow.deploy.tile_merge.merge_detections`: ``nms`` or ``wbf``,
overlap measured as ``ios`` or ``iou``), so one object cut by a seam gives one box.
NumPy (and Pillow for the downscale) only: this is on the ONNX serving path.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from detflow.core.errors import require_choice, require_positive
from detflow.data.tiles import check_tiles, tile_windows
from detflow.deploy.tile_merge import MERGES, METRICS, merge_detections

PredictBatch = Callable[[list[np.ndarray]], list[dict]]


def sliced_predict(
    image: np.ndarray,
    predict_batch: PredictBatch,
    *,
    size: int,
    overlap: int,
    with_full_image: bool,
    merge: str,
    iou: float,
    max_detections: int,
    metric: str = "ios",
    batch_size: int = 16,
) -> dict:
    """Detect on ``image`` (``[H, W, 3]`` uint8 RGB) tile by tile. The tiles given to
    ``predict_batch`` are views of ``image`` where they fit in it (no copy): it must not
    modify them.

    ``predict_batch``: the model on a list of ``[h, w, 3]`` uint8 images → one dict each of
    ``boxes`` (``[N, 4]`` xyxy pixels of that image), ``labels`` (``[N]`` int) and
    ``scores`` (``[N]``). ``iou``: the merge threshold on ``metric``. Returns ``{"boxes":
    [K, 4] float32 xyxy pixels of image, "labels": [K] int64, "scores": [K] float32,
    "tiles": number of tiles}``, best score first, ``K <= max_detections``.
    """
    _check(image, merge=merge, metric=metric, iou=iou, max_detections=max_detections)
    check_tiles(size=size, overlap=overlap)
    require_positive("batch_size", batch_size, integer=True)
    height, width = image.shape[:2]
    windows = tile_windows(width, height, size=size, overlap=overlap)
    parts = []
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        outputs = _run(predict_batch, [_tile(image, w, size) for w in chunk])
        parts += [_shifted(out, w) for out, w in zip(outputs, chunk, strict=True)]
    if with_full_image and len(windows) > 1:
        small, scale = _downscaled(image, size)
        parts.append(_shifted(_run(predict_batch, [small])[0], (0, 0, width, height), scale))
    boxes, labels, scores = (np.concatenate([p[k] for p in parts]) for k in range(3))
    sources = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)])
    merged = merge_detections(
        boxes, labels, scores, sources=sources, merge=merge, metric=metric, threshold=iou
    )
    best = {key: value[:max_detections] for key, value in merged.items()}  # best first
    return {**best, "tiles": len(windows)}


def _check(image, *, merge, metric, iou, max_detections) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3):
        raise ValueError("image must be an [H, W, 3] uint8 RGB array")
    if image.shape[2] != 3:
        raise ValueError(f"image must have 3 channels (RGB), got {image.shape[2]}")
    require_choice("slicing.merge", merge, MERGES)
    require_choice("slicing.metric", metric, METRICS)
    require_positive("slicing.iou", iou)
    require_positive("max_detections", max_detections, integer=True)


def _tile(image: np.ndarray, window: tuple, size: int) -> np.ndarray:
    """The window of ``image``: a view, or a black-padded ``size`` × ``size`` copy where the
    image is smaller than a tile."""
    x0, y0, x1, y1 = window
    view = image[y0:y1, x0:x1]
    if view.shape[:2] == (size, size):
        return view
    tile = np.zeros((size, size, 3), dtype=np.uint8)
    tile[: y1 - y0, : x1 - x0] = view
    return tile


def _downscaled(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """``image`` resized (bilinear) so its long side is ``size`` (never enlarged), and the
    ``(x, y)`` factors from its pixels to ``image``'s."""
    height, width = image.shape[:2]
    scale = min(1.0, size / max(width, height))
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(image).resize(new, Image.BILINEAR))
    return small, (width / new[0], height / new[1])


def _run(predict_batch: PredictBatch, tiles: list[np.ndarray]) -> list[dict]:
    outputs = predict_batch(tiles)
    if len(outputs) != len(tiles):
        raise ValueError(f"predict_batch returned {len(outputs)} outputs for {len(tiles)} tiles")
    return outputs


def _shifted(output: dict, window: tuple, scale: tuple = (1.0, 1.0)) -> tuple:
    """``(boxes, labels, scores)`` of one tile's output in full-image pixels: scaled by
    ``scale`` (x, y), shifted by the window's origin and clipped to the window (padding is not
    image); boxes with no area left are dropped."""
    x0, y0, x1, y1 = window
    boxes = np.asarray(output["boxes"], dtype=np.float64).reshape(-1, 4) * (scale * 2)
    boxes = np.clip(boxes + [x0, y0, x0, y0], [x0, y0, x0, y0], [x1, y1, x1, y1])
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    labels = np.asarray(output["labels"], dtype=np.int64).reshape(-1)
    scores = np.asarray(output["scores"], dtype=np.float64).reshape(-1)
    return boxes[keep], labels[keep], scores[keep]
