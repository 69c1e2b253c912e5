"""collect: turn one or several sources (YOLO, COCO, VOC, CSV, video, archive, synthetic)
into the canonical dataset.

Images are copied (or hard-linked with ``data.link``) under content-hash names, so a re-run
gives byte-identical output; the sources are only read. Everything a reader could not use is
listed with its reason. Readers return ``xyxy`` pixel boxes; the dataset stores COCO ``xywh``.

Config (``data``): ``format`` and ``path`` plus that format's keys; optionally
``extra_sources`` (a list of further source dicts, merged in order), ``class_map``
(``{old name: new name}``, or ``{old name: null}`` to drop a class) and ``difficult``
(``ignore``: VOC difficult and COCO crowd boxes are kept marked, evaluation ignores them and
training leaves them out; ``keep``: they are ordinary boxes; ``drop``: left out, counted as
``difficult_dropped``). An image whose real object lost its box is kept marked
``incomplete`` with the reasons (clean drops or keeps it). The stage hands it over
as :class:`CollectOptions` with ``limits.max_pixels``; the source mapping, whose keys depend
on its format, is checked here as it is read.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from detflow.core.boxes import xyxy_to_xywh
from detflow.core.errors import ConfigError, DataError, DetflowError, require_choice
from detflow.core.faults import maybe_kill
from detflow.core.files import atomic_dir, sha256_bytes
from detflow.core.images import DEFAULT_MAX_PIXELS, require_pixel_limit
from detflow.core.options import ConfigOptions
from detflow.data import manifest
from detflow.data.formats.archive import read_archive
from detflow.data.formats.base import ON_PURPOSE, SourceBox, SourceScan
from detflow.data.formats.coco import read_coco
from detflow.data.formats.csv_boxes import read_csv
from detflow.data.formats.synthetic import generate_synthetic
from detflow.data.formats.video import read_video
from detflow.data.formats.voc import read_voc
from detflow.data.formats.yolo import read_yolo

FORMATS = ("yolo", "coco", "voc", "csv", "video", "archive", "synthetic")
KEYS = {
    "yolo": {"path", "names", "group_regex"},
    "coco": {"path", "annotations", "images", "names", "group_regex"},
    "voc": {"path", "annotations", "images", "names", "group_regex"},
    "csv": {"path", "csv", "images", "columns", "names", "group_regex"},
    "video": {
        "path",
        "every_n_frames",
        "every_seconds",
        "max_frames",
        "skip_similar",
        "names",
        "frame_format",
    },
    "archive": {"path", "contents", "max_bytes"},
    "synthetic": {"path", "num_images", "image_size", "classes", "seed", "max_objects"},
}
MERGE_KEYS = {"extra_sources", "class_map", "link", "difficult"}  # only at the top of ``data``
DIFFICULT = ("ignore", "keep", "drop")
INNER_FORMATS = ("yolo", "coco", "voc", "csv", "video")  # what an archive may hold


@dataclass(frozen=True, kw_only=True)
class CollectOptions(ConfigOptions):
    """What the collect stage reads: the ``data`` source mapping (checked by format as it is
    read, see :func:`scan_source`) and the pixel limit ``limits.max_pixels``."""

    SECTION = "data"

    source: dict = field(metadata={"key": "data"})
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"key": "limits.max_pixels"})

    def check(self) -> None:
        require_pixel_limit(self.max_pixels)

    @classmethod
    def from_config(cls, data: dict, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> CollectOptions:
        """From the config's ``data`` mapping and ``limits.max_pixels``."""
        return super().from_config({}, source=data, max_pixels=max_pixels)


def scan_source(
    source: dict, *, max_pixels: int = DEFAULT_MAX_PIXELS, workdir: Path | None = None
) -> SourceScan:
    """Read every source of a ``data`` config and merge them (``class_map`` applied).

    Scratch files (unpacked archives, video frames) go to ``workdir``, or to a temporary
    folder that lives until ``scan.close()``.
    """
    options = dict(source)
    extras = options.pop("extra_sources", None) or []
    class_map = options.pop("class_map", None) or {}
    options.pop("link", None)
    difficult = options.pop("difficult", None) or "ignore"
    require_choice("data.difficult", difficult, DIFFICULT)
    if not isinstance(extras, list) or not all(isinstance(e, dict) for e in extras):
        raise ConfigError("data.extra_sources must be a list of source configs (format, path, …)")
    resources = []
    if workdir is None:
        resources.append(tempfile.TemporaryDirectory(prefix="detflow-collect-"))
        workdir = Path(resources[0].name)
    try:
        scans = [scan_one(options, key="data", max_pixels=max_pixels, workdir=workdir / "0")]
        for k, extra in enumerate(extras):
            key = f"data.extra_sources[{k}]"
            scan = scan_one(extra, key=key, max_pixels=max_pixels, workdir=workdir / f"{k + 1}")
            scans.append(_namespaced(scan, f"extra_sources[{k}]"))
        merged = _merge(scans, class_map, difficult)
    except BaseException:
        for resource in resources:
            resource.cleanup()
        raise
    merged.resources = resources
    return merged


def scan_one(source: dict, *, key: str, max_pixels: int, workdir: Path) -> SourceScan:
    """Read one source dict (no ``extra_sources``); errors name ``key`` when not ``data``."""
    options = dict(source)
    fmt = options.pop("format", None)
    try:
        require_choice(f"{key}.format", fmt, FORMATS)
        _check_keys(options, KEYS[fmt], fmt, key)
        if options.get("path") in (None, "") and fmt != "synthetic":
            raise ConfigError(f"{key}.path is required; set it to your {fmt} dataset")
        return _read(fmt, options, max_pixels=max_pixels, workdir=workdir)
    except DetflowError as exc:
        if key == "data":
            raise
        raise type(exc)(f"{key}: {exc}") from exc


def _read(fmt: str, options: dict, *, max_pixels: int, workdir: Path) -> SourceScan:
    path = options.pop("path", None)
    if fmt == "synthetic":
        return generate_synthetic(**options)
    if fmt == "yolo":
        return read_yolo(path, **options, max_pixels=max_pixels)
    if fmt == "coco":
        return read_coco(path, **options, max_pixels=max_pixels)
    if fmt == "voc":
        return read_voc(path, **options, max_pixels=max_pixels)
    if fmt == "csv":
        return read_csv(path, csv_file=options.pop("csv", None), **options, max_pixels=max_pixels)
    if fmt == "video":
        return read_video(path, **options, workdir=workdir, max_pixels=max_pixels)
    contents = options.pop("contents", None)
    if not isinstance(contents, dict):
        raise ConfigError("data.contents must be a source config, e.g. {format: yolo, path: .}")
    inner = dict(contents)
    require_choice("data.contents.format", inner.get("format"), INNER_FORMATS)
    inner.setdefault("path", ".")

    def scan_inner(config: dict, inner_workdir: Path) -> SourceScan:
        return scan_one(config, key="data.contents", max_pixels=max_pixels, workdir=inner_workdir)

    return read_archive(path, contents=inner, workdir=workdir, scan_inner=scan_inner, **options)


def _namespaced(scan: SourceScan, prefix: str) -> SourceScan:
    """Prefix an extra source's ``source``, ``group`` and dropped paths (no clashes)."""
    for image in scan.images:
        image.source = f"{prefix}/{image.source}"
        image.group = f"{prefix}/{image.group}"
        image.incomplete = [f"{prefix}/{reason}" for reason in image.incomplete]
    for item in [*scan.dropped, *scan.changed]:
        item["path"] = f"{prefix}/{item['path']}"
    if scan.class_names_from:
        scan.class_names_from = f"{prefix}: {scan.class_names_from}"
    return scan


def _merge(scans: list[SourceScan], class_map: dict, difficult: str = "ignore") -> SourceScan:
    known = {name for scan in scans for name in scan.class_names}
    for old, new in class_map.items():
        if old not in known:
            raise ConfigError(
                f"data.class_map.{old}: no source has class {old!r}; "
                f"classes found: {', '.join(sorted(known)) or 'none'}"
            )
        if new is not None and not isinstance(new, str):
            raise ConfigError(f"data.class_map.{old}={new!r} must be a class name or null")
    names: list[str] = []
    for scan in scans:
        for name in scan.class_names:
            mapped = class_map.get(name, name)
            if mapped is not None and mapped not in names:
                names.append(mapped)
    named_by = [scan.class_names_from for scan in scans if scan.class_names_from]
    merged = SourceScan(class_names=names, class_names_from="; ".join(named_by) or None)
    for scan in scans:
        merged.dropped.extend(scan.dropped)
        merged.changed.extend(scan.changed)
        for image in scan.images:
            image.boxes = _mapped_boxes(image, class_map, difficult, merged)
            merged.images.append(image)
    return merged


def _mapped_boxes(image, class_map: dict, difficult: str, merged: SourceScan) -> list[SourceBox]:
    """``image``'s boxes renamed by ``class_map`` and with ``data.difficult`` applied; the
    boxes left out on purpose are listed (they do not make the image incomplete)."""
    boxes = []
    for number, box in enumerate(image.boxes, start=1):
        new = class_map.get(box.class_name, box.class_name)
        where = f"{image.source}#box{number}"
        if new is None:
            detail = f"class {box.class_name!r} mapped to null in data.class_map"
            merged.drop(where, "box", "class_dropped", detail)
        elif box.ignore and difficult == "drop":
            merged.drop(where, "box", "difficult_dropped", f"{box.ignore} box, data.difficult=drop")
        else:
            boxes.append(SourceBox(new, box.xyxy, box.ignore if difficult == "ignore" else None))
    return boxes


def collect_dataset(*, options: CollectOptions, out_dir: str | Path) -> dict:
    """Write ``out_dir/dataset.json`` + ``out_dir/images/`` from ``options.source``; return the
    collect report."""
    source = options.source
    scan = scan_source(source, max_pixels=options.max_pixels)
    try:
        _check_usable(scan, source)
        dataset = _write(scan, out_dir, link=bool(source.get("link")))
    finally:
        scan.close()
    return _report(dataset, scan)


def _check_usable(scan: SourceScan, source: dict) -> None:
    if not scan.images:
        raise DataError(
            f"{source.get('path')}: no usable images found "
            f"({len(scan.dropped)} items dropped); check data.path and data.format"
        )
    if not scan.class_names:
        raise ConfigError(
            "data.names is empty and no source names a class; "
            "list the classes to label, e.g. data.names=[person,dog]"
        )


def _write(scan: SourceScan, out_dir: str | Path, *, link: bool) -> dict:
    dataset = manifest.new_dataset(class_names=scan.class_names)
    category = {name: i + 1 for i, name in enumerate(scan.class_names)}
    with atomic_dir(out_dir) as tmp:
        images = tmp / "images"
        images.mkdir()
        for item in tqdm(scan.images, desc="collect", unit="img", leave=False, disable=None):
            data = item.read_bytes()
            suffix = Path(item.path or item.source).suffix.lower() or ".png"
            file_name = sha256_bytes(data)[:20] + suffix
            _place(images / file_name, data, item.path if link else None)
            image_id = manifest.add_image(
                dataset,
                file_name=file_name,
                width=item.width,
                height=item.height,
                source=item.source,
                group=item.group,
                split=item.split,
                labelled=None if item.labelled else False,
                changes=item.changes or None,
                incomplete=item.incomplete or None,
            )
            for box in item.boxes:
                manifest.add_box(
                    dataset,
                    image_id=image_id,
                    category_id=category[box.class_name],
                    xywh=xyxy_to_xywh([box.xyxy])[0],
                    ignore=box.ignore,
                )
            maybe_kill("collect.image")
        manifest.save_dataset(dataset, tmp / "dataset.json", image_dir=images)
    return dataset


def _place(target: Path, data: bytes, link_from: Path | None) -> None:
    """Write ``data`` to ``target`` unless present; hard-link ``link_from`` when asked and
    possible (same file system), else copy."""
    if target.exists():
        return
    if link_from is not None:
        try:
            os.link(link_from, target)
            return
        except OSError:
            pass
    target.write_bytes(data)


def _report(dataset: dict, scan: SourceScan) -> dict:
    """Counts (DVC metrics) and every dropped item, changed box and incomplete image.
    ``images`` counts every image written, ``incomplete_images`` those of them marked
    incomplete: images in = ``images`` + ``dropped_images``."""
    kinds = Counter(d["item"] for d in scan.dropped)
    reasons = Counter(d["reason"] for d in scan.dropped)
    on_purpose = sum(1 for d in scan.dropped if d["reason"] in ON_PURPOSE)
    with_boxes = {a["image_id"] for a in dataset["annotations"]}
    unlabelled = sum(1 for im in dataset["images"] if im.get("labelled") is False)
    incomplete = [im for im in dataset["images"] if im.get("incomplete")]
    negatives = sum(
        1
        for im in dataset["images"]
        if im["id"] not in with_boxes
        and im.get("labelled") is not False
        and not im.get("incomplete")
    )
    return {
        "images": len(dataset["images"]),
        "boxes": len(dataset["annotations"]),
        "negatives": negatives,
        "unlabelled": unlabelled,
        "incomplete_images": len(incomplete),
        "ignored_boxes": sum(1 for a in dataset["annotations"] if manifest.is_ignored(a)),
        "changed_boxes": len(scan.changed),
        "classes": len(scan.class_names),
        "class_names_from": scan.class_names_from,
        "dropped_images": kinds["image"],
        "dropped_boxes": kinds["box"],
        "dropped_boxes_on_purpose": on_purpose,
        "dropped_labels": kinds["label"],
        "dropped_frames": kinds["frame"],
        "dropped_videos": kinds["video"],
        "dropped_members": kinds["member"],
        "dropped_by_reason": dict(sorted(reasons.items())),
        "changed_by_kind": dict(sorted(Counter(c["kind"] for c in scan.changed).items())),
        "dropped": scan.dropped,
        "changed": scan.changed,
        "incomplete": [{"source": im["source"], "reasons": im["incomplete"]} for im in incomplete],
    }


def _check_keys(options: dict, allowed: set[str], fmt: str, key: str = "data") -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]} is not a key of format '{fmt}'; "
            f"allowed keys: {', '.join(sorted(allowed))}"
        )
