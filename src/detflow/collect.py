"""collect: turn a source (YOLO folder, synthetic generator, …) into the canonical dataset.

Images are copied under content-hash names, so a re-run gives byte-identical output; the
source is only read. Everything a reader could not use is listed with its reason.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tqdm import tqdm

from detflow import manifest
from detflow.boxes import xyxy_to_xywh
from detflow.errors import ConfigError, DataError, require_choice
from detflow.files import atomic_dir, sha256_bytes
from detflow.formats.base import SourceScan
from detflow.formats.synthetic import generate_synthetic
from detflow.formats.yolo import read_yolo
from detflow.images import DEFAULT_MAX_PIXELS

FORMATS = ("yolo", "synthetic")


def scan_source(source: dict, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceScan:
    """Read the source described by a ``data`` config (``format`` plus that format's keys)."""
    options = dict(source)
    fmt = options.pop("format", None)
    require_choice("data.format", fmt, FORMATS)
    if fmt == "yolo":
        allowed = {"path", "names", "group_regex"}
        _check_keys(options, allowed, fmt)
        return read_yolo(
            options["path"],
            names=options.get("names"),
            group_regex=options.get("group_regex"),
            max_pixels=max_pixels,
        )
    allowed = {"path", "num_images", "image_size", "classes", "seed", "max_objects"}
    _check_keys(options, allowed, fmt)
    options.pop("path", None)
    return generate_synthetic(**options)


def collect_dataset(
    *, source: dict, out_dir: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS
) -> dict:
    """Write ``out_dir/dataset.json`` + ``out_dir/images/``; return the collect report."""
    scan = scan_source(source, max_pixels=max_pixels)
    if not scan.images:
        raise DataError(
            f"{source.get('path')}: no usable images found "
            f"({len(scan.dropped)} items dropped); check data.path and data.format"
        )
    dataset = manifest.new_dataset(class_names=scan.class_names)
    category = {name: i + 1 for i, name in enumerate(scan.class_names)}
    with atomic_dir(out_dir) as tmp:
        images = tmp / "images"
        images.mkdir()
        for item in tqdm(scan.images, desc="collect", unit="img", leave=False, disable=None):
            data = item.read_bytes()
            suffix = Path(item.source).suffix.lower() or ".png"
            file_name = sha256_bytes(data)[:20] + suffix
            target = images / file_name
            if not target.exists():
                target.write_bytes(data)
            image_id = manifest.add_image(
                dataset,
                file_name=file_name,
                width=item.width,
                height=item.height,
                source=item.source,
                group=item.group,
                split=item.split,
            )
            for box in item.boxes:
                manifest.add_box(
                    dataset,
                    image_id=image_id,
                    category_id=category[box.class_name],
                    xywh=xyxy_to_xywh([box.xyxy])[0],
                )
        manifest.save_dataset(dataset, tmp / "dataset.json", image_dir=images)
    return _report(dataset, scan)


def _report(dataset: dict, scan: SourceScan) -> dict:
    kinds = Counter(d["item"] for d in scan.dropped)
    reasons = Counter(d["reason"] for d in scan.dropped)
    with_boxes = {a["image_id"] for a in dataset["annotations"]}
    return {
        "images": len(dataset["images"]),
        "boxes": len(dataset["annotations"]),
        "negatives": len(dataset["images"]) - len(with_boxes),
        "classes": len(scan.class_names),
        "dropped_images": kinds["image"],
        "dropped_boxes": kinds["box"],
        "dropped_labels": kinds["label"],
        "dropped_by_reason": dict(sorted(reasons.items())),
        "dropped": scan.dropped,
    }


def _check_keys(options: dict, allowed: set[str], fmt: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"data.{unknown[0]} is not a key of format '{fmt}'; "
            f"allowed keys: {', '.join(sorted(allowed))}"
        )
