"""Tiles of large images: the window grid, the tile choice from the data, and a tiled dataset.

Small objects in large images vanish when the whole image is shrunk to the model's input.
Training on ``size`` × ``size`` tiles cut from the full-resolution image keeps them at their
native size. Geometry, all in pixels of the stored image:

- :func:`tile_windows`: the grid of ``(x0, y0, x1, y1)`` windows (``xyxy``, ``x1``/``y1``
  exclusive) with at least ``overlap`` px between neighbours;
- :func:`choose_tiles`: the tile size and overlap for a train split, or no tiles, with the
  reason;
- :func:`tile_boxes`: which boxes (``xyxy``) fall in a window, whole, cut but kept, or cut
  and ignored;
- :func:`detflow.data.tile_dataset.tile_dataset` writes the tiles of a canonical dataset.

NumPy only, no torch: the ONNX serving path slices with :func:`tile_windows` too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detflow.core.boxes import box_area
from detflow.core.errors import ConfigError, require_positive
from detflow.data import manifest
from detflow.data.box_stats import resized_size


@dataclass(frozen=True)
class TileSpec:
    """Square tiles of ``size`` px with at least ``overlap`` px between neighbours."""

    size: int
    overlap: int


def check_tiles(*, size, overlap) -> TileSpec:
    """``size`` (int > 0) and ``overlap`` (int, ``0 <= overlap < size``) checked."""
    require_positive("tiles.size", size, integer=True)
    require_positive("tiles.overlap", overlap, allow_zero=True, integer=True)
    if overlap >= size:
        raise ConfigError(
            f"tiles.overlap={overlap} must be smaller than tiles.size={size}; lower the overlap"
        )
    return TileSpec(size, overlap)


def axis_starts(length: int, *, size: int, overlap: int) -> list[int]:
    """Window starts along one axis of ``length`` px: the fewest windows of ``size`` px with
    at least ``overlap`` px between neighbours, spread evenly, the first at 0 and the last
    ending at ``length`` (one window at 0 when ``length <= size``)."""
    if length <= size:
        return [0]
    count = math.ceil((length - overlap) / (size - overlap))
    return [i * (length - size) // (count - 1) for i in range(count)]


def tile_windows(width: int, height: int, *, size: int, overlap: int) -> list[tuple]:
    """The tile grid of a ``width`` × ``height`` image: ``(x0, y0, x1, y1)`` windows in image
    pixels (``x1``, ``y1`` exclusive), row by row. ``overlap`` is in pixels: neighbouring
    windows share at least that many columns (rows), so any box whose sides are at most
    ``overlap`` lies whole in some window. The last column (row) ends at the image's edge.
    An image narrower (lower) than ``size`` gets one window its own width (height) along that
    axis, which the caller pads to ``size``."""
    check_tiles(size=size, overlap=overlap)
    require_positive("image width", width, integer=True)
    require_positive("image height", height, integer=True)
    xs = axis_starts(width, size=size, overlap=overlap)
    ys = axis_starts(height, size=size, overlap=overlap)
    return [(x, y, min(x + size, width), min(y + size, height)) for y in ys for x in xs]


def tile_boxes(boxes, window, *, min_visible: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes of one window. ``boxes``: ``[N, 4]`` ``xyxy`` image pixels; ``window``:
    ``(x0, y0, x1, y1)``. Returns ``(index [K], clipped [K, 4] xyxy tile pixels, status
    [K])`` for the boxes whose visible area is > 0, with status ``"whole"`` (inside the
    window), ``"kept"`` (cut by its edge, at least ``min_visible`` of the area visible) or
    ``"ignored"`` (cut, less visible)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = (float(v) for v in window)
    clipped = np.stack(
        [
            np.clip(b[:, 0], x0, x1),
            np.clip(b[:, 1], y0, y1),
            np.clip(b[:, 2], x0, x1),
            np.clip(b[:, 3], y0, y1),
        ],
        axis=1,
    )
    visible, area = box_area(clipped), box_area(b)
    index = np.flatnonzero(visible > 0)
    whole = visible[index] >= area[index]
    share = visible[index] / np.where(area[index] > 0, area[index], 1)
    status = np.where(whole, "whole", np.where(share >= min_visible, "kept", "ignored"))
    return index, clipped[index] - [x0, y0, x0, y0], status


def choose_tiles(
    box_sizes,
    image_sizes,
    *,
    min_size: int,
    max_size: int,
    min_object_px: float,
    fixed_size: bool = False,
    small_share: float = 0.25,
    min_gain: float = 1.5,
    fit_quantile: float = 0.99,
) -> tuple[TileSpec | None, str]:
    """Tiles for a train split, or None (train on whole images), and the reason in one line.

    ``box_sizes``: ``[N, 2]`` box ``(w, h)`` in full-resolution pixels; ``image_sizes``:
    ``[N, 2]`` ``(width, height)`` of each box's image (:func:`box_and_image_sizes`).
    ``min_size``/``max_size``/``fixed_size``: the model's resize (as torchvision's detection
    transform, :func:`detflow.data.box_stats.resized_size`); ``min_object_px``: the
    smallest ``sqrt(w·h)`` at the model's input its strides match well (the caller's, from
    the model).

    Tiles are chosen when more than ``small_share`` of the boxes are under ``min_object_px``
    at the whole image's input size and tiles enlarge the median box at least ``min_gain``
    times. The tile is ``min(min_size, max_size)`` px: it enters the model without
    resizing. The overlap is the ``fit_quantile`` of the boxes' longer sides (at most half a
    tile), so that share of boxes lies whole in some tile.
    """
    for key, value in (("min_size", min_size), ("max_size", max_size)):
        require_positive(f"model.{key}", value, integer=True)
    require_positive("min_object_px", min_object_px)
    require_positive("min_gain", min_gain)
    for key, value in (("small_share", small_share), ("fit_quantile", fit_quantile)):
        if not 0 <= value <= 1:
            raise ConfigError(f"{key}={value!r} must be a share in 0..1")
    sizes = np.asarray(box_sizes, dtype=np.float64).reshape(-1, 2)
    images = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    if len(sizes) != len(images):
        raise ValueError(f"{len(sizes)} box sizes but {len(images)} image sizes; one per box")
    if not len(sizes):
        return None, "no boxes to measure: whole images"
    scale = _input_scale(images, min_size=min_size, max_size=max_size, fixed_size=fixed_size)
    at_input = np.sqrt(sizes.prod(axis=1)) * scale
    small = float((at_input < min_object_px).mean())
    gain = float(np.median(1 / scale))
    seen = (
        f"{small:.0%} of boxes under {min_object_px:g} px at the input "
        f"(p50 {np.median(at_input):.1f} px)"
    )
    if small <= small_share:
        return None, f"{seen}, at most {small_share:.0%}: whole images"
    if gain < min_gain:
        return None, f"{seen}, but tiles would enlarge them only {gain:.2f}x: whole images"
    tile = int(min(min_size, max_size))
    side = math.ceil(float(np.quantile(sizes.max(axis=1), fit_quantile)))
    overlap = max(0, min(side, tile // 2))
    fits = _fit_share(sizes, images, tile=tile, overlap=overlap)
    return TileSpec(tile, overlap), (
        f"{seen}: tiles of {tile} px (no resize at the input, {gain:.1f}x larger objects), "
        f"overlap {overlap} px (p{fit_quantile * 100:g} box side {side} px); "
        f"{fits:.1%} of boxes fit whole in a tile"
    )


def _input_scale(images: np.ndarray, *, min_size, max_size, fixed_size) -> np.ndarray:
    """Per row of ``images`` (``width``, ``height``): the linear scale of the model's resize
    (the square root of the area ratio; x and y differ only with ``fixed_size``)."""
    unique, inverse = np.unique(images, axis=0, return_inverse=True)
    scales = []
    for width, height in unique:
        new_h, new_w = resized_size(
            int(width), int(height), min_size=min_size, max_size=max_size, fixed_size=fixed_size
        )
        scales.append(math.sqrt(new_w * new_h / (width * height)))
    return np.asarray(scales)[inverse.reshape(-1)]


def _fit_share(sizes: np.ndarray, images: np.ndarray, *, tile: int, overlap: int) -> float:
    """The share of boxes certain to lie whole in some tile: along each axis the side is at
    most ``overlap`` or the image is at most one tile."""
    fits = (sizes <= overlap) | (images <= tile)
    return float(fits.all(axis=1).mean())


def box_and_image_sizes(dataset: dict) -> tuple[np.ndarray, np.ndarray]:
    """``([N, 2] box (w, h), [N, 2] its image's (width, height))`` in pixels, for every
    box of a canonical dataset that is not ignored: :func:`choose_tiles`'s input."""
    images = {im["id"]: (im["width"], im["height"]) for im in dataset["images"]}
    anns = [a for a in dataset["annotations"] if not manifest.is_ignored(a)]
    sizes = np.asarray([a["bbox"][2:] for a in anns], dtype=np.float64).reshape(-1, 2)
    image_sizes = np.asarray([images[a["image_id"]] for a in anns], dtype=np.float64)
    return sizes, image_sizes.reshape(-1, 2)
