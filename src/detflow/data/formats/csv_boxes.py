"""CSV reader: one row per box, ``filename,class,xmin,ymin,xmax,ymax`` (column names set by
``columns``), boxes in absolute pixel ``xyxy``; the reader returns them unchanged as ``xyxy``.

A row whose class and coordinates are all empty marks its image as a negative. Images under
the image folder that no row names are listed as ``unannotated_image``. An optional ``split``
column keeps the source's own split. Header names match after trimming spaces and ignoring
case; the file may be UTF-8 (with or without a byte-order mark) or UTF-16. ``width`` and
``height`` columns, when the file has them, are the declared image size, checked against
the image (see :func:`detflow.data.formats.common.add_file_image`).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from detflow.core.errors import ConfigError, DataError
from detflow.core.images import DEFAULT_MAX_PIXELS
from detflow.data.formats.base import SourceBox, SourceScan
from detflow.data.formats.common import (
    SPLIT_NAMES,
    ClassFilter,
    ImageIndex,
    add_file_image,
    compile_group,
    read_text,
    require_dir,
)

DEFAULT_COLUMNS = {
    "filename": "filename",
    "class": "class",
    "xmin": "xmin",
    "ymin": "ymin",
    "xmax": "xmax",
    "ymax": "ymax",
    "split": None,
    "width": "width",  # optional: the declared image size, when the file has the columns
    "height": "height",
}
COORDS = ("xmin", "ymin", "xmax", "ymax")
OPTIONAL = ("width", "height")


def read_csv(
    root: str | Path,
    *,
    csv_file: str | None = None,
    images: str | None = None,
    columns: dict | None = None,
    names: list[str] | None = None,
    group_regex: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceScan:
    """Scan ``root``'s box CSV (``csv_file``, default: the only ``*.csv`` under ``root``).

    Filenames are resolved relative to ``images`` (default: ``root``), then by file name.
    """
    root = require_dir(root, what="CSV dataset").resolve()
    table = _csv_path(root, csv_file)
    cols = _columns(columns)
    image_root = require_dir(root / images, what="CSV images").resolve() if images else root
    index = ImageIndex(root, image_root)
    classes = ClassFilter(names)
    scan = SourceScan(class_names=[])
    rows = _rows(table, root, cols, scan)
    pattern = compile_group(group_regex)
    used: set[Path] = set()
    for name in sorted(rows):
        path = index.find(name, base=image_root, near=image_root / name)
        if path is None:
            for line, _ in rows[name]:
                scan.drop(line, "box", "missing_image", f"{name!r} not found")
            continue
        used.add(path)
        split = next((r.get(cols["split"]) for _, r in rows[name] if cols["split"]), None)
        add_file_image(
            scan,
            path,
            root=root,
            pattern=pattern,
            max_pixels=max_pixels,
            split=SPLIT_NAMES.get((split or "").strip().lower(), split or None),
            declared=_declared(rows[name], cols),
            where=rows[name][0][0],
            read_boxes=lambda w, h, name=name: [
                b for line, row in rows[name] if (b := _box(line, row, cols, classes, scan))
            ],
        )
    for image in index.files:
        if image not in used:
            scan.drop(image.relative_to(root).as_posix(), "image", "unannotated_image", "no row")
    scan.class_names = classes.names()
    return scan


def _csv_path(root: Path, csv_file: str | None) -> Path:
    if csv_file:
        path = (root / csv_file).resolve()
        if not path.is_file():
            raise DataError(f"{path}: CSV file not found; set data.csv relative to data.path")
        return path
    found = sorted(root.rglob("*.csv"))
    if len(found) != 1:
        listed = ", ".join(p.relative_to(root).as_posix() for p in found) or "none"
        raise ConfigError(
            f"data.csv is not set and {root} holds {len(found)} CSV files "
            f"({listed}); set data.csv to the box table"
        )
    return found[0]


def _columns(columns: dict | None) -> dict:
    cols = dict(DEFAULT_COLUMNS)
    unknown = sorted(set(columns or {}) - set(cols))
    if unknown:
        raise ConfigError(
            f"data.columns.{unknown[0]} is not allowed; use one of: {', '.join(DEFAULT_COLUMNS)}"
        )
    cols.update({k: v for k, v in (columns or {}).items() if v is not None or k == "split"})
    return {k: _header_key(v) if v is not None else None for k, v in cols.items()}


def _header_key(name) -> str:
    """A column name as matched: spaces trimmed, case ignored."""
    return str(name).strip().lower()


def _declared(rows: list, cols: dict):
    """The image size the first row declares, or None without size columns."""
    row = rows[0][1]
    if cols["width"] not in row or cols["height"] not in row:
        return None
    return (row.get(cols["width"]), row.get(cols["height"]))


def _rows(table: Path, root: Path, cols: dict, scan: SourceScan) -> dict[str, list]:
    rel = table.relative_to(root).as_posix() if table.is_relative_to(root) else str(table)
    try:
        handle = io.StringIO(read_text(table), newline="")
        reader = csv.reader(handle)
        given = next(reader, [])
        header = [_header_key(c) for c in given]
        needed = [cols[k] for k in ("filename", "class", *COORDS)]
        needed += [cols["split"]] if cols["split"] else []
        missing = [c for c in needed if c not in header]
        if missing:
            raise DataError(
                f"{table}: no column {missing[0]!r} (header: {given}); "
                "set data.columns to the file's column names"
            )
        rows: dict[str, list] = {}
        for number, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue  # a blank line
            row = dict(zip(header, values, strict=False))
            name = (row.get(cols["filename"]) or "").strip()
            if not name:
                scan.drop(f"{rel}:{number}", "box", "bad_row", "empty filename")
                continue
            rows.setdefault(name, []).append((f"{rel}:{number}", row))
    except (OSError, UnicodeError, csv.Error) as exc:
        raise DataError(f"{table}: cannot read the CSV ({exc})") from exc
    return rows


def _box(where: str, row: dict, cols: dict, classes: ClassFilter, scan) -> SourceBox | None:
    name = (row.get(cols["class"]) or "").strip()
    texts = [(row.get(cols[k]) or "").strip() for k in COORDS]
    if not name and not any(texts):
        return None  # a negative image's row
    if not name:
        scan.drop(where, "box", "missing_class", "empty class")
        return None
    if not classes.accept(name):
        scan.drop(where, "box", "class_not_selected", f"class {name!r} not in data.names")
        return None
    try:
        xyxy = tuple(float(t) for t in texts)
    except ValueError:
        scan.drop(where, "box", "non_numeric", f"xmin/ymin/xmax/ymax = {texts}")
        return None
    if not all(math.isfinite(v) for v in xyxy):
        scan.drop(where, "box", "non_finite", str(texts))
        return None
    return SourceBox(name, xyxy)
