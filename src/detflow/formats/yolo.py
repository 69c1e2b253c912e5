"""YOLO reader: ``images/`` + ``labels/`` folders, one ``class cx cy w h`` line per box.

Coordinates are YOLO ``cxcywh_norm``; the reader returns ``xyxy`` pixels. Accepts a flat
``images/`` + ``labels/`` layout or ``{train,valid,val,test}/images`` sub-folders; class
names come from the argument or the dataset's ``data.yaml``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from detflow.boxes import yolo_to_xyxy
from detflow.errors import ConfigError, DataError
from detflow.formats.base import SourceBox, SourceImage, SourceScan
from detflow.images import DEFAULT_MAX_PIXELS, image_size

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SPLIT_NAMES = {"train": "train", "valid": "val", "val": "val", "test": "test"}


def read_yolo(
    root: str | Path,
    *,
    names: list[str] | None = None,
    group_regex: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceScan:
    """Scan a YOLO dataset folder. Malformed lines and unreadable images are dropped, listed."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: YOLO dataset folder not found; set data.path to your dataset")
    scan = SourceScan(class_names=_class_names(root, names))
    pattern = _compile(group_regex)
    image_files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    used_labels = set()
    for path in image_files:
        rel = path.relative_to(root).as_posix()
        label = _label_path(path)
        used_labels.add(label)
        try:
            width, height = image_size(path.read_bytes(), name=rel, max_pixels=max_pixels)
        except DataError as exc:
            scan.drop(rel, "image", "unreadable_image", _reason(exc, rel))
            continue
        boxes = (
            _read_labels(label, root, scan, width=width, height=height) if label.exists() else []
        )
        scan.images.append(
            SourceImage(
                source=rel,
                group=_group(path, pattern),
                width=width,
                height=height,
                boxes=boxes,
                path=path,
                split=_split_of(path, root),
            )
        )
    for label in sorted(root.rglob("*.txt")):
        if "labels" in label.relative_to(root).parts and label not in used_labels:
            scan.drop(label.relative_to(root).as_posix(), "label", "orphan_label", "no image")
    return scan


def _class_names(root: Path, names) -> list[str]:
    if names:
        return [str(n) for n in names]
    data_yaml = root / "data.yaml"
    if not data_yaml.exists():
        raise ConfigError(
            f"data.names is empty and {data_yaml} does not exist; "
            "list the class names in data.names"
        )
    try:
        meta = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{data_yaml}: not valid YAML ({exc}); fix it or set data.names") from exc
    found = meta.get("names") if isinstance(meta, dict) else None
    if isinstance(found, dict):
        found = [found[k] for k in sorted(found)]
    if not isinstance(found, list) or not found:
        raise DataError(f"{data_yaml}: no 'names' list; add one or set data.names")
    return [str(n) for n in found]


def _read_labels(label: Path, root: Path, scan: SourceScan, *, width: int, height: int):
    rel = label.relative_to(root).as_posix()
    try:
        text = label.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        scan.drop(rel, "label", "unreadable_label", str(exc))
        return []
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{rel}:{number}"
        fields = line.split()
        if len(fields) != 5:
            scan.drop(where, "box", "bad_columns", f"expected 5 columns, got {len(fields)}")
            continue
        try:
            class_id = int(fields[0])
            values = [float(v) for v in fields[1:]]
        except ValueError:
            scan.drop(where, "box", "non_numeric", line.strip())
            continue
        if not all(math.isfinite(v) for v in values):
            scan.drop(where, "box", "non_finite", line.strip())
            continue
        if not 0 <= class_id < len(scan.class_names):
            scan.drop(
                where,
                "box",
                "unknown_class",
                f"class id {class_id} not in 0..{len(scan.class_names) - 1}",
            )
            continue
        xyxy = yolo_to_xyxy([values], width=width, height=height)[0]
        boxes.append(SourceBox(scan.class_names[class_id], tuple(float(v) for v in xyxy)))
    return boxes


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _split_of(image: Path, root: Path) -> str | None:
    for part in image.relative_to(root).parts[:-1]:
        if part.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[part.lower()]
    return None


def _compile(group_regex: str | None):
    if not group_regex:
        return None
    try:
        return re.compile(group_regex)
    except re.error as exc:
        raise ConfigError(f"data.group_regex={group_regex!r} is not a valid regex ({exc})") from exc


def _group(path: Path, pattern) -> str:
    match = pattern.search(path.name) if pattern else None
    if match is None:
        return path.stem
    return match.group(1) if match.groups() else match.group(0)


def _reason(exc: DataError, rel: str) -> str:
    text = str(exc)
    return text[len(rel) + 2 :] if text.startswith(rel + ": ") else text
