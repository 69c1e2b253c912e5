"""What a dataset's boxes look like to a model: the data report read before training.

:func:`input_boxes` maps each image's boxes (COCO ``xywh`` pixels of the stored image) to the
model's input, resized as torchvision's detection transform does: the short side to
``min_size`` unless the long side would pass ``max_size`` (``fixed_size``: stretched to one
square, as SSD does). :func:`data_report` summarises them: boxes per image and the densest
images, box sizes (``sqrt(w·h)``, in input pixels) and aspect ratios (``h / w``), objects
per class, and overlap between boxes of one image. Pure NumPy: no model, no torch.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from detflow.core.boxes import box_iou
from detflow.data import manifest

QUANTILES = (0.05, 0.5, 0.95)
SMALL_PX = 32.0  # sqrt(w·h) below this at the input size: COCO's "small"


@dataclass(frozen=True)
class InputBoxes:
    """One image at the model's input: its resized ``(height, width)``, its boxes as
    ``[N, 4]`` float64 ``xyxy`` input pixels, their category ids ``[N]`` and file name."""

    size: tuple[int, int]
    boxes: np.ndarray
    labels: np.ndarray
    file_name: str


def resized_size(
    width: int, height: int, *, min_size: int, max_size: int, fixed_size: bool = False
) -> tuple[int, int]:
    """``(height, width)`` of an image after the detection transform's resize."""
    if fixed_size:
        return int(min_size), int(min_size)
    scale = min(min_size / min(width, height), max_size / max(width, height))
    return int(math.floor(height * scale)), int(math.floor(width * scale))


def input_boxes(
    dataset: dict, *, min_size: int, max_size: int, fixed_size: bool = False
) -> list[InputBoxes]:
    """Every image of ``dataset`` (a canonical dataset) with its boxes at the input size."""
    by_image = manifest.annotations_by_image(dataset)
    out = []
    for image in dataset["images"]:
        anns = by_image.get(image["id"], [])
        size = resized_size(
            image["width"],
            image["height"],
            min_size=min_size,
            max_size=max_size,
            fixed_size=fixed_size,
        )
        xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes *= [
            size[1] / image["width"],
            size[0] / image["height"],
            size[1] / image["width"],
            size[0] / image["height"],
        ]
        labels = np.asarray([a["category_id"] for a in anns], dtype=np.int64)
        out.append(InputBoxes(size, boxes, labels, image["file_name"]))
    return out


def box_sizes(images: list[InputBoxes]) -> tuple[np.ndarray, np.ndarray]:
    """Widths and heights (input pixels) of all boxes, in image order."""
    boxes = np.concatenate([im.boxes for im in images]) if images else np.zeros((0, 4))
    return boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]


def data_report(
    dataset: dict,
    *,
    min_size: int,
    max_size: int,
    fixed_size: bool = False,
    densest: int = 3,
) -> dict:
    """The data report of ``dataset`` at the model's input size (a JSON-ready dict).

    ``boxes_per_image``: mean, median, p95, max; ``densest_images``: the ``densest`` images
    with most boxes; ``box_size_px`` / ``box_size_rel``: quantiles (p5, p50, p95) of
    ``sqrt(w·h)`` in input pixels / as a share of ``max_size``; ``small_box_share``: boxes
    under 32 px; ``aspect_ratio``: quantiles of ``h / w``; ``objects_per_class``;
    ``overlap``: the share of boxes that overlap (IoU > 0) or overlap at IoU > 0.5 another
    box of their image, and the p95 of each box's highest IoU with another.
    """
    images = input_boxes(dataset, min_size=min_size, max_size=max_size, fixed_size=fixed_size)
    counts = np.asarray([len(im.boxes) for im in images], dtype=np.float64)
    widths, heights = box_sizes(images)
    sizes = np.sqrt(np.clip(widths * heights, 0, None))
    ratios = heights / np.where(widths > 0, widths, np.nan)
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    per_class = Counter(int(a["category_id"]) for a in dataset["annotations"])
    best_other = []
    for im in images:
        if len(im.boxes) > 1:
            iou = box_iou(im.boxes, im.boxes)
            np.fill_diagonal(iou, 0.0)
            best_other.extend(iou.max(axis=1).tolist())
        else:
            best_other.extend([0.0] * len(im.boxes))
    best_other = np.asarray(best_other)
    order = sorted(range(len(images)), key=lambda i: (-counts[i], i))[:densest]
    return {
        "images": len(images),
        "boxes": int(counts.sum()),
        "input_size": [int(min_size), int(max_size)],
        "boxes_per_image": {
            "mean": _round(counts.mean()) if len(counts) else 0.0,
            "median": _round(np.median(counts)) if len(counts) else 0.0,
            "p95": _round(np.quantile(counts, 0.95)) if len(counts) else 0.0,
            "max": int(counts.max()) if len(counts) else 0,
        },
        "densest_images": [
            {"file_name": images[i].file_name, "boxes": int(counts[i])} for i in order
        ],
        "box_size_px": _quantiles(sizes),
        "box_size_rel": _quantiles(sizes / float(max_size)),
        "small_box_share": _share(sizes < SMALL_PX),
        "aspect_ratio": _quantiles(ratios[np.isfinite(ratios)]),
        "objects_per_class": {names[k]: per_class.get(k, 0) for k in sorted(names)},
        "overlap": {
            "share_touching": _share(best_other > 0),
            "share_iou_over_0.5": _share(best_other > 0.5),
            "max_iou_p95": _round(np.quantile(best_other, 0.95)) if len(best_other) else 0.0,
        },
    }


def _quantiles(values: np.ndarray) -> dict:
    if not len(values):
        return {f"p{round(q * 100)}": 0.0 for q in QUANTILES}
    return {f"p{round(q * 100)}": _round(np.quantile(values, q)) for q in QUANTILES}


def _share(mask: np.ndarray) -> float:
    return _round(mask.mean()) if len(mask) else 0.0


def _round(value) -> float:
    return round(float(value), 4)
