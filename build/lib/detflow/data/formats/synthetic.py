"""Seeded synthetic source: coloured shapes on textured backgrounds, for tests and demos.

The same arguments give byte-identical PNG images and identical ``xyxy`` pixel boxes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from detflow.core.errors import ConfigError, require_positive
from detflow.data.formats.base import SourceBox, SourceImage, SourceScan

SHAPES = ("circle", "square", "triangle")


def generate_synthetic(
    *, num_images: int, image_size: int, classes: list[str], seed: int, max_objects: int = 3
) -> SourceScan:
    """Generate ``num_images`` RGB images of ``image_size``² px holding 0..``max_objects`` shapes.

    Every fifth image is a negative (no shapes). Groups pair consecutive images (``i // 2``),
    imitating bursts, so a group-aware split has something to respect.
    """
    require_positive("data.num_images", num_images)
    require_positive("data.image_size", image_size)
    require_positive("data.max_objects", max_objects)
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or not classes:
        raise ConfigError(f"data.classes={list(classes)} must be a non-empty subset of {SHAPES}")
    scan = SourceScan(class_names=list(classes))
    for index in range(num_images):
        rng = np.random.default_rng([seed, index])
        canvas = _background(rng, image_size)
        boxes = [] if index % 5 == 4 else _draw_shapes(canvas, rng, classes, max_objects)
        buffer = io.BytesIO()
        canvas.save(buffer, format="PNG")
        scan.images.append(
            SourceImage(
                source=f"synthetic/{index:05d}.png",
                group=f"g{index // 2}",
                width=image_size,
                height=image_size,
                boxes=boxes,
                data=buffer.getvalue(),
            )
        )
    return scan


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    base = rng.integers(40, 120, size=3)
    noise = rng.normal(0, 12, size=(size, size, 3))
    ramp = np.linspace(-20, 20, size)[None, :, None]
    pixels = np.clip(base + noise + ramp, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _draw_shapes(canvas: Image.Image, rng, classes, max_objects) -> list[SourceBox]:
    draw = ImageDraw.Draw(canvas)
    size = canvas.width
    boxes = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        name = classes[int(rng.integers(len(classes)))]
        side = int(rng.integers(max(size // 6, 4), max(size // 3, 6)))
        x0 = int(rng.integers(0, size - side))
        y0 = int(rng.integers(0, size - side))
        colour = tuple(int(c) for c in rng.integers(170, 256, size=3))
        box = (x0, y0, x0 + side, y0 + side)
        if name == "circle":
            draw.ellipse(box, fill=colour)
        elif name == "square":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon(
                [(x0, y0 + side), (x0 + side, y0 + side), (x0 + side / 2, y0)], fill=colour
            )
        boxes.append(SourceBox(name, (float(x0), float(y0), float(x0 + side), float(y0 + side))))
    return boxes
