"""Helpers shared by the readers: image discovery, predefined splits, groups, class filters."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from detflow.core.boxes import exif_orient_xyxy
from detflow.core.errors import ConfigError, DataError
from detflow.core.images import DEFAULT_MAX_PIXELS, image_header
from detflow.data.formats.base import SourceBox, SourceImage, SourceScan

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# here, not in video.py (OpenCV): `detflow predict` tells videos apart without OpenCV
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
SPLIT_NAMES = {"train": "train", "valid": "val", "val": "val", "test": "test"}


def require_dir(root: str | Path, *, what: str) -> Path:
    """``root`` as a Path; DataError naming it and ``data.path`` when it is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: {what} folder not found; set data.path to your dataset folder")
    return root


def image_files(root: Path) -> list[Path]:
    """Every image file under ``root`` (any depth), sorted for a deterministic order."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def split_of(path: Path, root: Path) -> str | None:
    """The predefined split named by a folder on ``path``'s way from ``root`` (train/valid/test)."""
    for part in path.relative_to(root).parts[:-1]:
        if part.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[part.lower()]
    return None


def compile_group(group_regex: str | None):
    """Compile ``data.group_regex`` (None: each image is its own group)."""
    if not group_regex:
        return None
    try:
        return re.compile(group_regex)
    except re.error as exc:
        raise ConfigError(f"data.group_regex={group_regex!r} is not a valid regex ({exc})") from exc


def group_of(path: Path, pattern) -> str:
    """The regex's first group (or whole match) on the file name; the file stem otherwise."""
    match = pattern.search(path.name) if pattern else None
    if match is None:
        return path.stem
    return match.group(1) if match.groups() else match.group(0)


def read_size(path: Path, rel: str, scan: SourceScan, *, max_pixels: int = DEFAULT_MAX_PIXELS):
    """``(width, height, EXIF orientation)`` from the image header (pixel limit applied), or
    None after recording the image as dropped (``missing_image`` / ``unreadable_image``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        scan.drop(rel, "image", "missing_image", exc.strerror or str(exc))
        return None
    try:
        return image_header(data, name=rel, max_pixels=max_pixels)
    except DataError as exc:
        scan.drop(rel, "image", "unreadable_image", strip_name(exc, rel))
        return None


def add_file_image(
    scan: SourceScan,
    path: Path,
    *,
    root: Path,
    pattern,
    read_boxes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    split: str | None = None,
    declared: tuple | None = None,
    where: str | None = None,
    incomplete: list[str] | None = None,
    changes: list[str] | None = None,
) -> bool:
    """Append the image file ``path`` with the boxes ``read_boxes(width, height)`` returns
    (``SourceBox`` list, xyxy pixels) once its header reads under the pixel limit; False after
    recording it as dropped. ``split`` defaults to the folder's predefined split.

    The image is *incomplete* (kept, with the reasons) when a drop ``read_boxes`` records leaves a
    real object unlabelled, when ``incomplete`` lists reasons found before (and ``changes`` the
    kinds of changes made before, e.g. by a reader that reads every box first), or when the
    ``declared`` ``(width, height)`` of its annotation (at ``where``) disagrees with the header in a
    way a uniform rescale does not explain; a uniform rescale scales the boxes (change
    ``rescaled_boxes``). A declared size that is the EXIF-rotated view's (the image is stored
    sideways, orientation 5-8) means the boxes were drawn on that view: they are mapped back to the
    stored pixels (change ``boxes_to_stored_orientation``), which clean then rotates with the
    pixels."""
    rel = path.relative_to(root).as_posix()
    header = read_size(path, rel, scan, max_pixels=max_pixels)
    if header is None:
        return False
    size, orientation = header[:2], header[2]
    start, changed = len(scan.dropped), len(scan.changed)
    boxes = read_boxes(*size)
    lost = [*(incomplete or []), *scan.lost_since(start)]
    changes = [*(changes or []), *(c["kind"] for c in scan.changed[changed:])]
    where = where or rel
    found = f"image is {size[0]}x{size[1]}"
    scale = declared_scale(declared, size)
    view = (size[1], size[0])
    if scale is None and orientation in (5, 6, 7, 8) and declared_scale(declared, view):
        sx, sy = declared_scale(declared, view)
        inverse = {6: 8, 8: 6}.get(orientation, orientation)
        boxes = [to_stored(rescaled(b, (sx, sy)), inverse, view) for b in boxes]
        detail = f"declared {_size_text(declared)}: the EXIF-rotated view of {found}"
        scan.change(where, "boxes_to_stored_orientation", detail)
        changes.append("boxes_to_stored_orientation")
    elif scale is None:
        lost.append(f"{where}: size_mismatch (declared {_size_text(declared)}, {found})")
    elif scale != (1.0, 1.0):
        boxes = [rescaled(box, scale) for box in boxes]
        changes.append("rescaled_boxes")
        scan.change(where, "rescaled_boxes", f"declared {_size_text(declared)}, {found}")
    scan.images.append(
        SourceImage(
            source=rel,
            group=group_of(path, pattern),
            width=size[0],
            height=size[1],
            boxes=boxes,
            path=path,
            split=split if split is not None else split_of(path, root),
            incomplete=lost,
            changes=sorted(set(changes)),
        )
    )
    return True


RESCALE_TOLERANCE = 0.01  # declared/actual ratios of width and height may differ this much


def declared_scale(declared, size) -> tuple[float, float] | None:
    """``(sx, sy)`` mapping boxes in the ``declared`` ``(width, height)`` onto the image's
    ``size``: ``(1, 1)`` when nothing (or nothing usable: missing, zero) is declared or it
    matches, the factors of a uniform rescale, None when the two disagree otherwise."""
    try:
        dw, dh = (float(v) for v in declared)
    except (TypeError, ValueError):
        return (1.0, 1.0)
    if not (math.isfinite(dw) and math.isfinite(dh)) or dw <= 0 or dh <= 0:
        return (1.0, 1.0)
    width, height = size
    if (round(dw), round(dh)) == (width, height):
        return (1.0, 1.0)
    sx, sy = width / dw, height / dh
    if abs(sx - sy) <= RESCALE_TOLERANCE * max(sx, sy):
        return (sx, sy)
    return None


def rescaled(box: SourceBox, scale: tuple[float, float]) -> SourceBox:
    sx, sy = scale
    x1, y1, x2, y2 = box.xyxy
    return replace(box, xyxy=(x1 * sx, y1 * sy, x2 * sx, y2 * sy))


def to_stored(box: SourceBox, inverse: int, view: tuple[int, int]) -> SourceBox:
    """``box`` drawn on the EXIF-rotated ``view`` (width, height) mapped back to the stored
    pixels by the ``inverse`` orientation."""
    xyxy = exif_orient_xyxy([box.xyxy], orientation=inverse, width=view[0], height=view[1])[0]
    return replace(box, xyxy=tuple(float(v) for v in xyxy))


def _size_text(declared) -> str:
    return "x".join(f"{float(v):g}" for v in declared)


def read_text(path: Path) -> str:
    """A label file's text as annotation tools write it: UTF-8 with or without a byte-order
    mark, or UTF-16 (with a byte-order mark, or without one when every other byte is NUL).
    Raises UnicodeDecodeError (naming the encoding tried) or OSError."""
    data = path.read_bytes()
    encoding = text_encoding(data)
    return data.decode(encoding)


def text_encoding(data: bytes) -> str:
    """The encoding of a text file's bytes: ``utf-16`` (BOM), ``utf-16-le``/``-be`` (no BOM,
    ASCII text with NUL high bytes) or ``utf-8-sig`` (UTF-8, a BOM skipped when present)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if len(data) >= 2 and len(data) % 2 == 0 and b"\x00" in data:
        if not any(data[1::2]) and all(data[0::2]):
            return "utf-16-le"
        if not any(data[0::2]) and all(data[1::2]):
            return "utf-16-be"
    return "utf-8-sig"


def strip_name(exc: Exception, rel: str) -> str:
    """An error's text without a leading ``"<rel>: "`` (the report already names the path)."""
    text = str(exc)
    return text[len(rel) + 2 :] if text.startswith(rel + ": ") else text


class ImageIndex:
    """Find an annotation's image under ``root`` by relative path, else by file name (the
    nearest one to the annotation file when several share it), or by stem."""

    def __init__(self, root: Path, search: Path | None = None):
        self.root = root.resolve()
        self.files = [p.resolve() for p in image_files(search or root)]
        self.by_name: dict[str, list[Path]] = defaultdict(list)
        self.by_stem: dict[str, list[Path]] = defaultdict(list)
        for path in self.files:
            self.by_name[path.name].append(path)
            self.by_stem[path.stem].append(path)

    def find(self, name: str, *, base: Path, near: Path | None = None) -> Path | None:
        """Resolve ``name`` (relative to ``base``); never outside ``root``."""
        name = name.replace("\\", "/")
        direct = (base.resolve() / name).resolve()
        if _inside(direct, self.root) and direct.is_file():
            return direct
        found = self.by_name.get(name.rsplit("/", 1)[-1])
        return _nearest(found, near) if found else None

    def find_stem(self, stem: str, *, near: Path | None = None) -> Path | None:
        """An image whose file name is ``stem`` plus an image suffix."""
        found = self.by_stem.get(stem)
        return _nearest(found, near) if found else None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _nearest(candidates: list[Path], near: Path | None) -> Path:
    if near is None or len(candidates) == 1:
        return candidates[0]

    def shared(path: Path) -> int:
        count = 0
        for a, b in zip(path.parts, near.parts, strict=False):
            if a != b:
                break
            count += 1
        return count

    return max(candidates, key=shared)  # ties: the first in sorted order


class ClassFilter:
    """Class names of a reader that discovers them: fixed by ``names`` (others are dropped as
    ``unknown_class``) or collected from the annotations, sorted."""

    def __init__(self, names: list[str] | None):
        self.fixed = [str(n) for n in names] if names else None
        self.seen: set[str] = set()

    def accept(self, name: str) -> bool:
        if self.fixed is not None:
            return name in self.fixed
        self.seen.add(name)
        return True

    def names(self) -> list[str]:
        return list(self.fixed) if self.fixed is not None else sorted(self.seen)
