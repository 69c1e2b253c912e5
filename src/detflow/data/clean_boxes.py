"""clean's box checks, one image's boxes at a time.

Each box (COCO ``xywh`` pixels, as the dataset stores it) is checked for a number in every
field, a known class, finite values, positive size, bounds in the decoded (EXIF-oriented)
image within a tolerance (then clipped to it), a minimum side, and same-class duplicates.
The conversions (``xywh`` → ``xyxy`` pixels, the EXIF orientation) and the duplicates' IoUs
are computed for all of an image's boxes at once: per box, NumPy's call overhead made a
dense image cost clean's main process more than decoding it cost a worker.
"""

from __future__ import annotations

import math

from detflow.core.boxes import box_iou, exif_orient_xyxy, scale_xyxy, xywh_to_xyxy

XYXY = tuple[float, float, float, float]
IOU_ROWS = 256  # boxes of a class whose IoUs with the others are one matrix


def check_boxes(anns, image, *, orientation, size, policy, log, categories) -> list:
    """The valid boxes of ``anns`` as ``[(annotation, xyxy)]``, ``xyxy`` in pixels of the
    decoded image (``size``: its width, height; ``orientation``: the EXIF orientation of
    the stored ``image["width"]`` × ``image["height"]``), in input order. Every other box
    goes to ``log.drop_box`` with its reason, in input order; clipped ones are counted in
    ``log.modified["clipped"]``. ``categories``: the valid category ids."""
    checked = _checked(anns, image, orientation, size, policy, categories)
    duplicates = _duplicates(anns, checked, policy.duplicate_box_iou)
    kept = []
    for k, (ann, (result, clipped)) in enumerate(zip(anns, checked, strict=True)):
        log.modified["clipped"] += clipped
        if isinstance(result, str) or k in duplicates:
            log.drop_box(image, ann, result if isinstance(result, str) else "duplicate_box")
            continue
        kept.append((ann, result))
    return kept


def _duplicates(anns, checked, limit) -> set[int]:
    """Positions of the boxes whose IoU with a box of their class kept before them is above
    ``limit`` (None: no check). Per class of ``n`` boxes, the IoUs come as ``(b, n)``
    matrices of ``b`` = :data:`IOU_ROWS` rows, so memory grows with ``256 n``, not ``n²``."""
    if limit is None:
        return set()
    by_class: dict = {}
    for k, (result, _) in enumerate(checked):
        if not isinstance(result, str):
            by_class.setdefault(anns[k]["category_id"], []).append(k)
    duplicates = set()
    for members in by_class.values():
        if len(members) < 2:
            continue
        boxes, kept = [checked[k][0] for k in members], []
        for start in range(0, len(members), IOU_ROWS):
            rows = box_iou(boxes[start : start + IOU_ROWS], boxes)
            for i, row in enumerate(rows, start):
                if kept and row[kept].max() > limit:
                    duplicates.add(members[i])
                else:
                    kept.append(i)
    return duplicates


def _checked(anns, image, orientation, size, policy, categories) -> list:
    """Per box: ``(reason or clipped xyxy, whether clipping changed the box)``; a reason
    when it is dropped before the duplicate check."""
    numbers = [_xywh(ann) for ann in anns]
    problems = [_problem(ann, xywh, categories) for ann, xywh in zip(anns, numbers, strict=True)]
    usable = [xywh for xywh, problem in zip(numbers, problems, strict=True) if problem is None]
    if not usable:
        return problems
    oriented = iter(
        exif_orient_xyxy(
            xywh_to_xyxy(usable),
            orientation=orientation,
            width=image["width"],
            height=image["height"],
        ).tolist()
    )
    return [problem or _bounded(next(oriented), size, policy) for problem in problems]


def _xywh(ann) -> list[float] | None:
    try:
        return [float(v) for v in ann["bbox"]]
    except (TypeError, ValueError):
        return None


def _problem(ann, xywh, categories) -> tuple[str, bool] | None:
    if xywh is None:
        return "non_numeric", False
    if ann["category_id"] not in categories:
        return "unknown_class", False
    if not all(math.isfinite(v) for v in xywh):
        return "non_finite", False
    if xywh[2] <= 0 or xywh[3] <= 0:
        return "non_positive_size", False
    return None


def _bounded(xyxy, size, policy) -> tuple[XYXY | str, bool]:
    x1, y1, x2, y2 = xyxy
    width, height, tol = size[0], size[1], policy.clip_tolerance_px
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        return "out_of_bounds", False
    clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    changed = clipped != (x1, y1, x2, y2)
    if clipped[2] - clipped[0] < policy.min_box_px or clipped[3] - clipped[1] < policy.min_box_px:
        return "too_small", changed
    return clipped, changed


def scaled_boxes(boxes: list, transform) -> list:
    """``[(annotation, xyxy)]`` through clean's resize ``transform`` (scale_x, scale_y,
    offset_x, offset_y): ``x' = x * scale_x + offset_x``, the same for y."""
    if not boxes:
        return boxes
    sx, sy, ox, oy = transform
    xyxy = scale_xyxy([b for _, b in boxes], scale_x=sx, scale_y=sy, offset_x=ox, offset_y=oy)
    return [(a, tuple(b)) for (a, _), b in zip(boxes, xyxy.tolist(), strict=True)]
