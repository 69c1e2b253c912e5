"""YOLO reader: ``images/`` + ``labels/`` folders, one ``class cx cy w h`` line per box.

Coordinates are YOLO ``cxcywh_norm``; the reader returns ``xyxy`` pixels. Accepts a flat
``images/`` + ``labels/`` layout or ``{train,valid,val,test}/images`` sub-folders; class
names come from the argument or the dataset's ``data.yaml``.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from detflow.core.boxes import yolo_to_xyxy
from detflow.core.errors import ConfigError, DataError
from detflow.data.formats.base import SourceBox, SourceScan
from detflow.data.formats.common import (
    add_file_image,
    compile_group,
    image_files,
    require_dir,
)
from detflow.core.images import DEFAULT_MAX_PIXELS


def read_yolo(
    root: str | Path,
    *,
    names: list[str] | None = None,
    group_regex: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceScan:
    """Scan a YOLO dataset folder. Malformed lines and unreadable images are dropped, listed."""
    root = require_dir(root, what="YOLO dataset")
    scan = SourceScan(class_names=_class_names(root, names))
    pattern = compile_group(group_regex)
    used_labels = set()
    for path in image_files(root):
        label = _label_path(path)
        used_labels.add(label)

        def read_boxes(width, height, label=label):
            if not label.exists():
                return []
            return _read_labels(label, root, scan, width=width, height=height)

        add_file_image(
            scan, path, root=root, pattern=pattern, read_boxes=read_boxes, max_pixels=max_pixels
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
        problem = " ".join(str(exc).split())  # PyYAML's message spans lines: one line here
        raise DataError(
            f"{data_yaml}: not valid YAML ({problem}); fix it or set data.names"
        ) from exc
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
