"""Drawing boxes on images and tiling images into a grid (previews, prediction images).

Images are ``[H, W, 3]`` uint8 RGB arrays; boxes are ``xyxy`` pixels of that image.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from detflow.core.errors import require_positive


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, distinct RGB colour per class id (golden-ratio hue steps)."""
    hue = (int(class_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_boxes(
    image: np.ndarray,
    *,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    names: dict[int, str] | None = None,
    scores: Sequence[float] | None = None,
    color: tuple[int, int, int] | None = None,
    width: int = 2,
) -> np.ndarray:
    """Return a copy of ``image`` with ``xyxy`` boxes outlined and captioned.

    Captions are the class name (``names[label]``, else the id) and the score when given;
    ``color`` overrides the per-class colour (e.g. ground truth in one colour).
    """
    canvas = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")
    pen = ImageDraw.Draw(canvas)
    scores = list(scores) if scores is not None else [None] * len(labels)
    for box, label, score in zip(boxes, labels, scores, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        rgb = color or class_color(label)
        pen.rectangle((x1, y1, x2, y2), outline=rgb, width=width)
        caption = (names or {}).get(int(label), str(int(label)))
        if score is not None:
            caption = f"{caption} {float(score):.2f}"
        left, top, right, bottom = pen.textbbox((x1, y1), caption)
        lift = bottom - top + 2
        pen.rectangle((left, top - lift, right + 2, bottom - lift), fill=rgb)
        pen.text((x1 + 1, y1 - lift), caption, fill=(0, 0, 0))
    return np.asarray(canvas)


def image_grid(images: Sequence[np.ndarray], *, columns: int, cell: int = 256) -> np.ndarray:
    """Tile images row-major into ``columns`` columns of ``cell``×``cell`` pixel cells.

    Each image is scaled to fit its cell (aspect ratio kept) on a dark background.
    Returns ``[rows * cell, columns * cell, 3]`` uint8.
    """
    require_positive("columns", columns)
    require_positive("cell", cell)
    if not images:
        raise ValueError("image_grid needs at least one image")
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * cell, rows * cell), (24, 24, 24))
    for index, array in enumerate(images):
        tile = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).convert("RGB")
        tile.thumbnail((cell, cell), Image.Resampling.BILINEAR)
        row, col = divmod(index, columns)
        grid.paste(
            tile,
            (col * cell + (cell - tile.width) // 2, row * cell + (cell - tile.height) // 2),
        )
    return np.asarray(grid)
