"""clean: the data-quality gate. Every image and box is kept, modified or dropped with a reason.

Images are fully decoded (a pixel limit applies), converted to 8-bit RGB with EXIF orientation
applied to pixels and boxes; exact duplicates (same decoded pixels) keep their first copy.
Boxes (COCO ``xywh`` pixels) are checked for finite values, positive size, bounds (clipped
within a tolerance) and a minimum side. The source dataset is only read.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from detflow import manifest
from detflow.boxes import exif_orient_xyxy, xywh_to_xyxy, xyxy_to_xywh
from detflow.errors import DataError, require_positive
from detflow.files import atomic_dir
from detflow.images import DEFAULT_MAX_PIXELS, decode_rgb
from detflow.near_duplicates import clusters, near_duplicate_pairs, perceptual_hash

EXIF_ORIENTATION = 0x0112


def clean_dataset(
    *,
    in_json: str | Path,
    out_dir: str | Path,
    min_box_px: float = 2.0,
    clip_tolerance_px: float = 4.0,
    near_duplicate_distance: int | None = 4,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict:
    """Write the cleaned ``out_dir/dataset.json`` + ``out_dir/images/``; return the report.

    Near-duplicates (perceptual-hash distance ``<= near_duplicate_distance``; ``None``
    disables) are kept but merged into one ``group``, so a split keeps them together."""
    require_positive("clean.min_box_px", min_box_px, allow_zero=True)
    require_positive("clean.clip_tolerance_px", clip_tolerance_px, allow_zero=True)
    if near_duplicate_distance is not None:
        require_positive("clean.near_duplicate_distance", near_duplicate_distance, allow_zero=True)
    source = manifest.load_dataset(in_json)
    src_images = manifest.image_dir(in_json, source)
    boxes_of = manifest.annotations_by_image(source)
    valid_categories = {c["id"] for c in source["categories"]}
    out = manifest.new_dataset(class_names=manifest.class_names(source))
    log = _Log()
    seen: dict[str, str] = {}
    hashes: list[int] = []
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        for image in tqdm(source["images"], desc="clean", unit="img", leave=False, disable=None):
            anns = boxes_of.get(image["id"], [])
            try:
                data = (src_images / image["file_name"]).read_bytes()
                rgb = decode_rgb(data, name=image["file_name"], max_pixels=max_pixels)
            except (OSError, DataError) as exc:
                log.drop_image(image, anns, "unreadable_image", str(exc))
                continue
            digest = hashlib.sha256(rgb.tobytes() + repr(rgb.size).encode()).hexdigest()
            if digest in seen:
                log.drop_image(image, anns, "exact_duplicate", f"same pixels as {seen[digest]}")
                continue
            seen[digest] = image["source"]
            hashes.append(perceptual_hash(rgb))
            file_name = _write_image(data, rgb, digest, tmp / "images")
            orientation = _orientation(data)
            new_id = manifest.add_image(
                out,
                file_name=file_name,
                width=rgb.width,
                height=rgb.height,
                source=image["source"],
                group=image["group"],
                split=image.get("split"),
            )
            for ann in anns:
                xyxy = _check_box(
                    ann,
                    image,
                    orientation,
                    rgb.size,
                    valid_categories,
                    min_box_px,
                    clip_tolerance_px,
                    log,
                )
                if xyxy is not None:
                    manifest.add_box(
                        out,
                        image_id=new_id,
                        category_id=ann["category_id"],
                        xywh=xyxy_to_xywh([xyxy])[0],
                    )
        if not out["images"]:
            raise DataError(f"{in_json}: every image was dropped by clean; see the report reasons")
        near = _merge_near_duplicate_groups(out, hashes, near_duplicate_distance)
        manifest.save_dataset(out, tmp / "dataset.json", image_dir=tmp / "images")
    return {**log.report(source, out), **near}


def _merge_near_duplicate_groups(dataset: dict, hashes: list[int], max_distance) -> dict:
    """Give every image of a near-duplicate cluster (joined through shared groups too) the
    group of the cluster's first image; report the pairs found."""
    images = dataset["images"]
    pairs = [] if max_distance is None else near_duplicate_pairs(hashes, max_distance=max_distance)
    first_of_group: dict[str, int] = {}
    links = list(pairs)
    for index, image in enumerate(images):
        links.append((first_of_group.setdefault(image["group"], index), index))
    roots = clusters(len(images), links)
    groups_before = len(first_of_group)
    for index, image in enumerate(images):
        image["group"] = images[roots[index]]["group"]
    return {
        "near_duplicate_pairs": len(pairs),
        "groups_merged": groups_before - len({im["group"] for im in images}),
        "near_duplicates": [
            {"a": images[i]["source"], "b": images[j]["source"], "distance": d} for i, j, d in pairs
        ],
    }


def _check_box(ann, image, orientation, size, valid_categories, min_px, tolerance, log):
    x, y, w, h = (float(v) for v in ann["bbox"])
    if ann["category_id"] not in valid_categories:
        return log.drop_box(image, ann, "unknown_class")
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return log.drop_box(image, ann, "non_finite")
    if w <= 0 or h <= 0:
        return log.drop_box(image, ann, "non_positive_size")
    x1, y1, x2, y2 = exif_orient_xyxy(
        xywh_to_xyxy([[x, y, w, h]]),
        orientation=orientation,
        width=image["width"],
        height=image["height"],
    )[0]
    width, height = size
    if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
        return log.drop_box(image, ann, "out_of_bounds")
    clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if clipped != (x1, y1, x2, y2):
        log.modified["clipped"] += 1
    if clipped[2] - clipped[0] < min_px or clipped[3] - clipped[1] < min_px:
        return log.drop_box(image, ann, "too_small")
    return clipped


def _write_image(data: bytes, rgb, digest: str, folder: Path) -> str:
    """Keep the original bytes when they already decode to this RGB image; else write PNG."""
    from PIL import Image

    original = Image.open(io.BytesIO(data))
    if original.mode == "RGB" and _orientation(data) in (0, 1) and original.format == "JPEG":
        name = digest[:20] + ".jpg"
        (folder / name).write_bytes(data)
        return name
    name = digest[:20] + ".png"
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    (folder / name).write_bytes(buffer.getvalue())
    return name


def _orientation(data: bytes) -> int:
    from PIL import Image

    try:
        return int(Image.open(io.BytesIO(data)).getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - unreadable EXIF means "as stored"
        return 1


class _Log:
    """Counts and lists of what clean dropped or changed."""

    def __init__(self):
        self.dropped: list[dict] = []
        self.modified: Counter = Counter()

    def drop_image(self, image, anns, reason, detail=""):
        self.dropped.append(
            {
                "item": "image",
                "source": image["source"],
                "reason": reason,
                "detail": detail,
                "boxes": len(anns),
            }
        )
        for ann in anns:
            self.drop_box(image, ann, f"image_dropped:{reason}")

    def drop_box(self, image, ann, reason):
        self.dropped.append(
            {
                "item": "box",
                "source": image["source"],
                "reason": reason,
                "annotation_id": ann["id"],
                "bbox": ann["bbox"],
            }
        )
        return None

    def report(self, source: dict, out: dict) -> dict:
        images = Counter(d["reason"] for d in self.dropped if d["item"] == "image")
        boxes = Counter(d["reason"] for d in self.dropped if d["item"] == "box")
        counts = Counter(a["category_id"] for a in out["annotations"])
        names = manifest.class_names(out)
        per_class = {name: counts.get(i + 1, 0) for i, name in enumerate(names)}
        return {
            "images_in": len(source["images"]),
            "images_kept": len(out["images"]),
            "images_dropped": sum(images.values()),
            "boxes_in": len(source["annotations"]),
            "boxes_kept": len(out["annotations"]),
            "boxes_dropped": sum(boxes.values()),
            "boxes_clipped": self.modified["clipped"],
            "images_dropped_by_reason": dict(sorted(images.items())),
            "boxes_dropped_by_reason": dict(sorted(boxes.items())),
            "class_counts": per_class,
            "dropped": self.dropped,
        }
