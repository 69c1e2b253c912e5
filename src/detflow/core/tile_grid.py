"""The tile grid of a large image: square windows of ``size`` px with at least ``overlap`` px
between neighbours, in pixels of the stored image (``xyxy``, ``x1``/``y1`` exclusive).

Shared by the tiled dataset (:mod:`detflow.data.tiles`, :mod:`detflow.data.tile_dataset`)
and sliced inference (:mod:`detflow.core.slicing`: evaluate, export parity and the ONNX
serving path). Imports nothing but core: no NumPy needed, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from detflow.core.errors import ConfigError, require_positive


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
