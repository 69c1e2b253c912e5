"""CSV reader: one row per box, ``filename,class,xmin,ymin,xmax,ymax`` (column names set by
``columns``), boxes in absolute pixel ``xyxy``; the reader returns them unchanged as ``xyxy``.

A row whose class and coordinates are all empty marks its image as a negative. Images under
the image folder that no row names are listed as ``unannotated_image``. An optional ``split``
column keeps the source's own split.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from detflow.core.errors import ConfigError, DataError
from detflow.data.formats.base import SourceBox, SourceScan
from detflow.data.formats.common import (
    SPLIT_NAMES,
    ClassFilter,
    ImageIndex,
    add_file_image,
    compile_group,
    require_dir,
)
from detflow.core.images import DEFAULT_MAX_PIXELS

DEFAULT_COLUMNS = {
    "filename": "filename",
    "class": "class",
    "xmin": "xmin",
    "ymin": "ymin",
    "xmax": "xmax",
    "ymax": "ymax",
    "split": None,
}
COORDS = ("xmin", "ymin", "xmax", "ymax")


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
    return cols


def _rows(table: Path, root: Path, cols: dict, scan: SourceScan) -> dict[str, list]:
    rel = table.relative_to(root).as_posix() if table.is_relative_to(root) else str(table)
    try:
        with open(table, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            needed = [cols[k] for k in ("filename", "class", *COORDS)]
            needed += [cols["split"]] if cols["split"] else []
            missing = [c for c in needed if c not in header]
            if missing:
                raise DataError(
                    f"{table}: no column {missing[0]!r} (header: {header}); "
                    "set data.columns to the file's column names"
                )
            rows: dict[str, list] = {}
            for number, row in enumerate(reader, start=2):
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
        scan.drop(where, "box", "unknown_class", f"class {name!r} not in data.names")
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
