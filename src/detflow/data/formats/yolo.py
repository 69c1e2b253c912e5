"""YOLO reader: ``images/`` + ``labels/`` folders, one ``class cx cy w h`` line per box.

Coordinates are YOLO ``cxcywh_norm``; the reader returns ``xyxy`` pixels. Accepts a flat ``images/``
+ ``labels/`` layout or ``{train,valid,val,test}/images`` sub-folders; class names come from the
dataset's ``data.yaml`` (a list, or a mapping id → name) or, without one, a labelling tool's
``classes.txt`` or a darknet ``*.names`` file (one name per line), or the argument: names all listed
in that file select those classes (the others are left out on purpose, ``class_not_selected``),
other names name the ids 0, 1, …; ``SourceScan.class_names_from`` says which named them.
Segmentation rows (``class x1 y1 … xn yn``, three or more points) become the box of the polygon's
extent (change ``polygon_to_box``). Label text may be UTF-8 with or without a byte-order mark or
UTF-16, with any line ends and runs of blanks. An empty label file is a negative; an image without
one is incomplete (``no_label``), and two images sharing one label file are both dropped
(``ambiguous_label``).
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from detflow.core.boxes import yolo_to_xyxy
from detflow.core.errors import ConfigError, DataError, DetflowError
from detflow.core.images import DEFAULT_MAX_PIXELS
from detflow.data.formats.base import SourceBox, SourceScan
from detflow.data.formats.common import (
    add_file_image,
    compile_group,
    image_files,
    read_text,
    require_dir,
)


def read_yolo(
    root: str | Path,
    *,
    names: list[str] | None = None,
    group_regex: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceScan:
    """Scan a YOLO dataset folder. Malformed lines and unreadable images are dropped, listed."""
    root = require_dir(root, what="YOLO dataset")
    ids, kept, named_by = _class_names(root, names)
    scan = SourceScan(class_names=kept, class_names_from=named_by)
    pattern = compile_group(group_regex)
    images_of: dict[Path, list[Path]] = {}
    for path in image_files(root):
        images_of.setdefault(_label_path(path), []).append(path)
    for path in image_files(root):
        label = _label_path(path)
        rel_label = label.relative_to(root).as_posix()
        if len(images_of[label]) > 1:
            others = [p.relative_to(root).as_posix() for p in images_of[label] if p != path]
            detail = f"{rel_label} is also the label of {', '.join(others)}; rename one image"
            scan.drop(path.relative_to(root).as_posix(), "image", "ambiguous_label", detail)
            continue

        def read_boxes(width, height, label=label):
            if not label.exists():
                return []
            return _read_labels(label, root, scan, ids, width=width, height=height)

        missing = [] if label.exists() else [f"{rel_label}: no_label (no label file)"]
        add_file_image(
            scan,
            path,
            root=root,
            pattern=pattern,
            read_boxes=read_boxes,
            max_pixels=max_pixels,
            incomplete=missing,
        )
    for label in sorted(root.rglob("*.txt")):
        if label.relative_to(root).as_posix() == named_by:
            continue  # labels/classes.txt named the classes
        if "labels" in label.relative_to(root).parts and label not in images_of:
            scan.drop(label.relative_to(root).as_posix(), "label", "orphan_label", "no image")
    return scan


def _class_names(root: Path, names) -> tuple[dict[int, str], list[str], str]:
    """(class id → name, the class list to keep, in order, the file or key that named them).
    Without ``names``: the names file's (:func:`_listed_names`), all kept. With ``names`` all
    found in the names file's: a selection (ids keep the file's names; the other classes are
    left out on purpose, as ``class_not_selected``). Otherwise ``names`` names the ids 0, 1, …
    in order."""
    if names:
        names = [str(n) for n in names]
        positional = _unique(dict(enumerate(names)), "data.names")
        try:
            listed, named_by = _listed_names(root)
        except DetflowError:
            return positional, names, "data.names"  # given: an unreadable names file is unused
        if set(names) <= set(listed.values()):
            return listed, names, f"data.names (selected from {named_by})"
        return positional, names, "data.names"
    ids, named_by = _listed_names(root)
    return ids, list(ids.values()), named_by


def _listed_names(root: Path) -> tuple[dict[int, str], str]:
    """(class id → name, the file that named them, relative to ``root``): ``data.yaml`` or,
    without one, a labelling tool's ``classes.txt`` (in the root or ``labels/``) or a darknet
    ``*.names`` file in the root: one name per line, the line number (from 0) its id."""
    if (root / "data.yaml").exists():
        return _yaml_names(root), "data.yaml"
    files = [root / "classes.txt", *sorted(root.glob("*.names")), root / "labels" / "classes.txt"]
    files = [f for f in files if f.is_file()]
    if not files:
        raise ConfigError(
            f"data.names is empty and {root} has no data.yaml, classes.txt or *.names; "
            "list the class names in data.names"
        )
    listed = {f.relative_to(root).as_posix(): _lines_names(f) for f in files}
    first = next(iter(listed))
    differ = [name for name, ids in listed.items() if ids != listed[first]]
    if differ:
        raise DataError(
            f"{root}: {first} and {differ[0]} list different class names; "
            "delete the stale one or set data.names"
        )
    return listed[first], first


def _lines_names(path: Path) -> dict[int, str]:
    """Class id → name from a ``classes.txt`` / ``*.names`` file (one name per line)."""
    try:
        lines = [line.strip() for line in read_text(path).splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc}); fix it or set data.names") from exc
    while lines and not lines[-1]:
        lines.pop()
    if not lines or not all(lines):
        raise DataError(
            f"{path}: {'no class names' if not lines else 'a blank line among the names'}; "
            "write one class name per line (line 1 = class id 0) or set data.names"
        )
    return _unique(dict(enumerate(lines)), str(path))


def _yaml_names(root: Path) -> dict[int, str]:
    """Class id → name from data.yaml's ``names`` (a list, or a mapping id → name)."""
    data_yaml = root / "data.yaml"
    try:
        meta = yaml.safe_load(read_text(data_yaml)) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{data_yaml}: cannot read ({exc}); fix it or set data.names") from exc
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())  # PyYAML's message spans lines: one line here
        raise DataError(
            f"{data_yaml}: not valid YAML ({problem}); fix it or set data.names"
        ) from exc
    found = meta.get("names") if isinstance(meta, dict) else None
    if isinstance(found, dict) and found:
        try:
            ids = {int(k): str(v) for k, v in found.items()}
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{data_yaml}: 'names' maps {sorted(map(str, found))} to names; "
                "its keys must be class ids 0, 1, …"
            ) from exc
        return _unique(dict(sorted(ids.items())), f"{data_yaml}: names")
    if not isinstance(found, list) or not found:
        raise DataError(f"{data_yaml}: no 'names' list; add one or set data.names")
    return _unique(dict(enumerate(str(n) for n in found)), f"{data_yaml}: names")


def _unique(ids: dict[int, str], where: str) -> dict[int, str]:
    """``ids`` when every name is listed once; else a DataError naming the duplicates."""
    seen: dict[str, list[int]] = {}
    for class_id, name in ids.items():
        seen.setdefault(name, []).append(class_id)
    twice = {name: found for name, found in seen.items() if len(found) > 1}
    if twice:
        listed = "; ".join(f"{n!r} has ids {', '.join(map(str, i))}" for n, i in twice.items())
        raise DataError(
            f"{where} lists a class name more than once ({listed}); give each id its own "
            "name, then merge them with data.class_map (e.g. {dog_2: dog})"
        )
    return ids


def _read_labels(label: Path, root: Path, scan: SourceScan, ids: dict, *, width, height):
    rel = label.relative_to(root).as_posix()
    try:
        text = read_text(label)
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 or UTF-16 text ({exc})"
        scan.drop(rel, "label", "unreadable_label", detail)
        return []
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        box = _read_line(line, f"{rel}:{number}", scan, ids, width=width, height=height)
        if box is not None:
            boxes.append(box)
    return boxes


def _read_line(line: str, where: str, scan: SourceScan, ids: dict, *, width, height):
    """One label line → SourceBox, or None after recording the drop."""
    fields = line.split()
    polygon = len(fields) >= 7 and len(fields) % 2 == 1
    if len(fields) != 5 and not polygon:
        expected = "5 columns (class cx cy w h) or class + 3 or more x y points"
        scan.drop(where, "box", "bad_columns", f"expected {expected}, got {len(fields)}")
        return None
    try:
        class_id = int(fields[0])
        values = [float(v) for v in fields[1:]]
    except ValueError:
        scan.drop(where, "box", "non_numeric", line.strip())
        return None
    if not all(math.isfinite(v) for v in values):
        scan.drop(where, "box", "non_finite", line.strip())
        return None
    if class_id not in ids:
        known = f"{min(ids)}..{max(ids)}" if len(ids) == max(ids) - min(ids) + 1 else sorted(ids)
        scan.drop(where, "box", "unknown_class", f"class id {class_id} not in {known}")
        return None
    if ids[class_id] not in scan.class_names:
        detail = f"class {ids[class_id]!r} (id {class_id}) not in data.names"
        scan.drop(where, "box", "class_not_selected", detail)
        return None
    if polygon:
        xs, ys = values[0::2], values[1::2]
        xyxy = (min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height)
        scan.change(where, "polygon_to_box", f"{len(xs)} points")
        return SourceBox(ids[class_id], tuple(float(v) for v in xyxy))
    xyxy = yolo_to_xyxy([values], width=width, height=height)[0]
    return SourceBox(ids[class_id], tuple(float(v) for v in xyxy))


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")
