"""COCO reader: an instances JSON (``images``, ``annotations``, ``categories``) + its images.

``bbox`` is COCO ``xywh`` absolute pixels; the reader returns ``xyxy`` pixels. With no
``annotations`` key every ``*.json`` under the root that looks like COCO is read (Roboflow's
``{train,valid,test}/_annotations.coco.json`` layout; the folder names the split). Images are
looked up relative to ``images`` (default: the JSON's folder), then by file name; image
records with distinct ids naming one file are dropped (``ambiguous_label``, their boxes as
``missing_image``). A category
that is only the ``supercategory`` of others and has no boxes (Roboflow's umbrella class) is
left out. Crowd boxes (``iscrowd: 1``) are kept marked ``crowd`` (evaluation ignores them,
training leaves them out; ``data.difficult`` in collect). An annotation without a usable
``bbox`` but with a ``segmentation`` (polygons or RLE) gets the segmentation's box (change
``polygon_to_box`` / ``mask_to_box``). An image's declared ``width``/``height`` is checked
against its file (see :func:`detflow.data.formats.common.add_file_image`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pycocotools import mask as mask_utils

from detflow.core.errors import DataError
from detflow.core.images import DEFAULT_MAX_PIXELS
from detflow.data.formats.base import SourceBox, SourceScan
from detflow.data.formats.common import (
    ClassFilter,
    ImageIndex,
    add_file_image,
    compile_group,
    require_dir,
)


def read_coco(
    root: str | Path,
    *,
    annotations: str | None = None,
    images: str | None = None,
    names: list[str] | None = None,
    group_regex: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceScan:
    """Scan COCO JSON file(s) under ``root``; bad records are dropped and listed."""
    root = require_dir(root, what="COCO dataset").resolve()
    files = _json_files(root, annotations)
    index = ImageIndex(root)
    classes = ClassFilter(names)
    pattern = compile_group(group_regex)
    scan = SourceScan(class_names=[])
    used: set[Path] = set()
    for json_path in files:
        base = (root / images).resolve() if images else json_path.parent
        _read_one(json_path, root, base, index, scan, classes, pattern, used, max_pixels)
    listed_dirs = {p.parent for p in used}
    for image in index.files:
        if image.parent in listed_dirs and image not in used:
            rel = image.relative_to(root).as_posix()
            scan.drop(rel, "image", "unannotated_image", "not listed in the COCO JSON")
    scan.class_names = classes.names()
    return scan


def _json_files(root: Path, annotations: str | None) -> list[Path]:
    if annotations:
        path = (root / annotations).resolve()
        if not path.is_file():
            raise DataError(f"{path}: COCO JSON not found; set data.annotations (relative to path)")
        return [path]
    found = [p for p in sorted(root.rglob("*.json")) if _looks_like_coco(p)]
    if not found:
        raise DataError(
            f"{root}: no COCO JSON (with images, annotations, categories) found; "
            "set data.annotations to the instances file"
        )
    return found


def _looks_like_coco(path: Path) -> bool:
    try:
        data = _load(path)
    except DataError:
        return False
    return isinstance(data, dict) and {"images", "annotations", "categories"} <= set(data)


def _load(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def _read_one(json_path, root, base, index, scan, classes, pattern, used, max_pixels) -> None:
    rel_json = json_path.relative_to(root).as_posix()
    data = _load(json_path)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DataError(f"{json_path}: not a COCO instances file (images/annotations/categories)")
    category = _categories(data)
    boxes_of, lost_of, changes_of = _group_boxes(data, rel_json, category, classes, scan)
    seen_ids = set()
    named = _records_per_file(data["images"], index, base, json_path)
    for record in data["images"]:
        where = f"{rel_json}#image{record.get('id') if isinstance(record, dict) else '?'}"
        name = record.get("file_name") if isinstance(record, dict) else None
        if not isinstance(name, str) or not name:
            scan.drop(where, "image", "bad_record", "image record without file_name")
            continue
        path = index.find(name, base=base, near=json_path)
        if _key(record.get("id")) and record["id"] in seen_ids:
            detail = f"id {record['id']!r} is used by an earlier image; its boxes went to that one"
            scan.drop(where, "image", "duplicate_id", detail)
            if path is not None:  # accounted for by this record: not an unannotated image too
                used.add(path)
            continue
        seen_ids.add(record.get("id"))
        if path is None:
            scan.drop(where, "image", "missing_image", f"{name!r} not found")
            continue
        used.add(path)
        if len(named[path]) > 1:
            detail = f"its file is named by image ids {', '.join(map(repr, named[path]))}"
            scan.drop(where, "image", "ambiguous_label", detail)
            continue
        image_id = record.get("id")
        key = image_id if _key(image_id) else None
        add_file_image(
            scan,
            path,
            root=root,
            pattern=pattern,
            max_pixels=max_pixels,
            read_boxes=lambda w, h, i=key: boxes_of.pop(i, []) if i is not None else [],
            declared=(record.get("width"), record.get("height")),
            where=where,
            incomplete=lost_of.get(key, []),
            changes=changes_of.get(key, []),
        )
    for image_id, boxes in boxes_of.items():
        for _ in boxes:
            scan.drop(f"{rel_json}#image{image_id}", "box", "missing_image", "no usable image")


def _records_per_file(records: list, index, base: Path, json_path: Path) -> dict:
    """Image file → the ids of the records (distinct ids) that name it."""
    named: dict = {}
    for record in records:
        name = record.get("file_name") if isinstance(record, dict) else None
        path = index.find(name, base=base, near=json_path) if isinstance(name, str) else None
        ids = named.setdefault(path, [])
        if record.get("id") not in ids:
            ids.append(record.get("id"))
    return named


def _key(value) -> bool:
    return isinstance(value, (int, str))


def _categories(data: dict) -> dict:
    cats = [
        c
        for c in data["categories"]
        if isinstance(c, dict) and _key(c.get("id")) and isinstance(c.get("name"), str)
    ]
    used = {
        a.get("category_id")
        for a in data["annotations"]
        if isinstance(a, dict) and _key(a.get("category_id"))
    }
    supers = {c.get("supercategory") for c in cats}
    return {
        c["id"]: str(c["name"])
        for c in cats
        if c["id"] in used or c["name"] not in supers or _only_self_super(c, cats)
    }


def _only_self_super(cat: dict, cats: list[dict]) -> bool:
    """True when no other category names ``cat`` as its supercategory."""
    return not any(o is not cat and o.get("supercategory") == cat["name"] for o in cats)


def _group_boxes(data, rel_json, category, classes, scan) -> tuple[dict, dict, dict]:
    """Boxes per image id, plus per image id the reasons of drops that left an object
    unlabelled and the kinds of changes made."""
    boxes: dict = {}
    lost: dict = {}
    changes: dict = {}
    for number, ann in enumerate(data["annotations"], start=1):
        where = f"{rel_json}#annotation{ann.get('id', number) if isinstance(ann, dict) else number}"
        start, changed = len(scan.dropped), len(scan.changed)
        box = _box(ann, where, category, classes, scan)
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if box is not None and not _key(image_id):
            scan.drop(where, "box", "bad_record", f"image_id={image_id!r}")
        elif box is not None:
            boxes.setdefault(image_id, []).append(box)
        if _key(image_id):
            lost.setdefault(image_id, []).extend(scan.lost_since(start))
            changes.setdefault(image_id, []).extend(c["kind"] for c in scan.changed[changed:])
    return boxes, lost, changes


def _box(ann, where, category, classes, scan) -> SourceBox | None:
    if not isinstance(ann, dict):
        scan.drop(where, "box", "bad_record", "annotation is not an object")
        return None
    name = category.get(ann.get("category_id")) if _key(ann.get("category_id")) else None
    if name is None:
        scan.drop(where, "box", "unknown_class", f"category_id {ann.get('category_id')!r}")
        return None
    if not classes.accept(name):
        scan.drop(where, "box", "class_not_selected", f"class {name!r} not in data.names")
        return None
    ignore = "crowd" if ann.get("iscrowd") else None
    bbox = ann.get("bbox")
    if bbox in (None, []) and ann.get("segmentation"):
        xyxy = _segmentation_box(ann["segmentation"], where, scan)
        return None if xyxy is None else SourceBox(name, xyxy, ignore)
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        scan.drop(where, "box", "bad_box", f"bbox={bbox!r}")
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        scan.drop(where, "box", "non_finite", f"bbox={bbox!r}")
        return None
    return SourceBox(name, (x, y, x + w, y + h), ignore)


def _segmentation_box(segmentation, where: str, scan: SourceScan):
    """``xyxy`` extent of COCO polygons (``[[x1, y1, …], …]``) or of an RLE mask (``{"size":
    [h, w], "counts": …}``, compressed or not, via pycocotools), recorded as a change; None
    after recording the drop (``bad_box``)."""
    if isinstance(segmentation, list):
        try:
            points = [float(v) for polygon in segmentation for v in polygon]
        except (TypeError, ValueError):
            points = []
        if len(points) < 6 or len(points) % 2 or not all(math.isfinite(v) for v in points):
            scan.drop(where, "box", "bad_box", "no bbox, and a segmentation that is not polygons")
            return None
        xs, ys = points[0::2], points[1::2]
        scan.change(where, "polygon_to_box", "box from the segmentation polygons")
        return (min(xs), min(ys), max(xs), max(ys))
    try:
        height, width = (int(v) for v in segmentation["size"])
        rle = segmentation
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        detail = f"no bbox, and an RLE segmentation that cannot be read ({type(exc).__name__})"
        scan.drop(where, "box", "bad_box", detail)
        return None
    if w <= 0 or h <= 0:
        scan.drop(where, "box", "bad_box", "no bbox, and an empty RLE mask")
        return None
    scan.change(where, "mask_to_box", "box from the RLE segmentation")
    return (x, y, x + w, y + h)
