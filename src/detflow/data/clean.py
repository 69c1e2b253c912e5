"""clean: the data-quality gate. Every image and box is kept, changed or dropped with a reason.

Images are fully decoded under a pixel limit; truncated ones are dropped or repaired (the
decodable part re-encoded) by policy; all become 8-bit RGB with EXIF orientation applied to
pixels and boxes, optionally resized by policy. Exact duplicates (same decoded pixels) keep
their first copy; near-duplicates (perceptual hash, in any of the 8 flips and quarter turns)
share a ``group`` or are dropped, and copies whose file names carry one original's name share
a ``group`` (:mod:`detflow.data.clean_groups`). Boxes
(COCO ``xywh`` pixels in the files, ``xyxy`` pixels here) are checked for class, finite
values, positive size, bounds (clipped within a tolerance), minimum side and same-class
duplicates. A box dropped for a reason that leaves a real object unlabelled
(:data:`LOST_OBJECT`: non-numeric, unknown class, non-finite, far out of bounds), like an
image collect marked ``incomplete``, makes its image incomplete: dropped with the reasons
(``clean.incomplete_images=drop``, the default) or kept, marked and counted (``keep``).
Quality flags are reported, never used to drop. The source is only read.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from detflow.core.boxes import xyxy_to_xywh
from detflow.core.errors import DataError, require_positive
from detflow.core.faults import maybe_kill
from detflow.core.files import atomic_dir
from detflow.core.images import (
    DEFAULT_MAX_PIXELS,
    RESIZE_MODES,
    require_pixel_limit,
)
from detflow.core.options import ConfigOptions
from detflow.data import manifest
from detflow.data.clean_boxes import check_boxes, scaled_boxes
from detflow.data.clean_groups import (
    drop_cluster_members,
    merge_groups,
    name_links,
    near_pairs,
    pair_listing,
)
from detflow.data.clean_images import Analysed, analyse_all
from detflow.data.near_duplicates import clusters

# clean's box drop reasons that leave a real object of the image without its box
LOST_OBJECT = frozenset({"non_numeric", "unknown_class", "non_finite", "out_of_bounds"})


@dataclass(frozen=True, kw_only=True)
class CleanPolicy(ConfigOptions):
    """What clean does: the validated ``clean.*`` (see conf/config.yaml) and the pixel limit
    ``limits.max_pixels``; ``CleanPolicy.from_config(cfg["clean"], max_pixels=…)``."""

    SECTION = "clean"

    min_box_px: float = 2.0
    clip_tolerance_px: float = 4.0
    duplicate_box_iou: float | None = 0.95
    near_duplicate_distance: int | None = 4
    near_duplicate_policy: str = field(default="group", metadata={"choices": ("group", "drop")})
    broken_images: str = field(default="drop", metadata={"choices": ("drop", "repair")})
    incomplete_images: str = field(default="drop", metadata={"choices": ("drop", "keep")})
    resize: str = field(default="none", metadata={"choices": RESIZE_MODES})
    resize_size: int = 640
    imbalance_warning: float = 10.0
    quality: dict = field(default_factory=dict)
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"key": "limits.max_pixels"})

    def check(self) -> None:
        require_positive("clean.min_box_px", self.min_box_px, allow_zero=True)
        require_positive("clean.clip_tolerance_px", self.clip_tolerance_px, allow_zero=True)
        for key in ("duplicate_box_iou", "near_duplicate_distance"):
            if getattr(self, key) is not None:
                require_positive(f"clean.{key}", getattr(self, key), allow_zero=True)
        require_positive("clean.resize_size", self.resize_size)
        require_pixel_limit(self.max_pixels)


def clean_dataset(
    *,
    in_json: str | Path,
    out_dir: str | Path,
    policy: CleanPolicy | None = None,
    workers: int | None = None,
) -> dict:
    """Write the cleaned ``out_dir/dataset.json`` + ``out_dir/images/``; return the report
    (counts per reason, every dropped/changed image and box, quality flags, class balance,
    and the ``clean.*`` policy). ``workers``: processes decoding images (None: one per core);
    the outputs are byte-identical for any number (:func:`analyse_all`)."""
    policy = policy or CleanPolicy()
    source = manifest.load_dataset(in_json)
    folder = manifest.image_dir(in_json, source)
    items = [(folder / im["file_name"], im["source"], im["file_name"]) for im in source["images"]]
    boxes_of = manifest.annotations_by_image(source)
    out = manifest.new_dataset(class_names=manifest.class_names(source))
    log, hashes = _Log(), []
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        (stage := tmp / "staged").mkdir()  # the workers' output files, moved or deleted
        cleaner = _ImageCleaner(
            tmp / "images", policy, log, {c["id"] for c in source["categories"]}
        )
        analysed = analyse_all(items, policy=policy, stage_dir=stage, workers=workers)
        for image, done in tqdm(
            zip(source["images"], analysed, strict=True),
            total=len(items),
            desc="clean",
            unit="img",
            leave=False,
            disable=None,
        ):
            kept = cleaner(image, boxes_of.get(image["id"], []), done)
            maybe_kill("clean.image")
            if kept is None:
                if done.staged is not None:
                    done.staged.unlink()
                continue
            file_name, changes, boxes, incomplete = kept
            new_id = manifest.add_image(
                out,
                file_name=file_name,
                width=done.out_size[0],
                height=done.out_size[1],
                source=image["source"],
                group=image["group"],
                split=image.get("split"),
                labelled=image.get("labelled"),
                quality=done.quality or None,
                changes=changes or None,
                incomplete=incomplete or None,
            )
            xywh = xyxy_to_xywh([xyxy for _, xyxy in boxes]).tolist()
            for (ann, _), box in zip(boxes, xywh, strict=True):
                manifest.add_box(
                    out,
                    image_id=new_id,
                    category_id=ann["category_id"],
                    xywh=box,
                    ignore=_ignore_kind(ann),
                )
            hashes.append(done.phashes)
        for folder in stage.iterdir():  # one per worker, empty: each file moved or deleted
            folder.rmdir()
        stage.rmdir()
        near = _near_duplicates(out, hashes, policy, log, tmp / "images")
        if not out["images"]:
            raise DataError(f"{in_json}: every image was dropped by clean; see the report reasons")
        manifest.save_dataset(out, tmp / "dataset.json", image_dir=tmp / "images")
    report = {**log.report(source, out), **near, **_balance(out, policy.imbalance_warning)}
    if report["images_incomplete_kept"]:
        report["warnings"].append(
            f"{report['images_incomplete_kept']} incomplete images kept "
            "(clean.incomplete_images=keep): an object of each has no box"
        )
    return {**report, "policy": policy.to_dict()}


class _ImageCleaner:
    """One analysed image at a time, in order: drop exact duplicates, check boxes, write."""

    def __init__(self, out_dir, policy, log, categories):
        self.out_dir, self.policy, self.log, self.categories = out_dir, policy, log, categories
        self.seen: dict[str, str] = {}

    def __call__(self, image: dict, anns: list[dict], done: Analysed):
        """``(file name, changes, [(annotation, xyxy)], incomplete reasons)``, or None when
        dropped. ``done``: the image as :func:`analyse_image` decoded it."""
        if done.dropped is not None:
            return self.log.drop_image(image, anns, *done.dropped)
        digest = done.digest
        if digest in self.seen:
            return self.log.drop_image(
                image, anns, "exact_duplicate", f"same pixels as {self.seen[digest]}"
            )
        self.seen[digest] = image["source"]
        start = len(self.log.dropped)
        boxes = check_boxes(
            anns,
            image,
            orientation=done.orientation,
            size=done.size,
            policy=self.policy,
            log=self.log,
            categories=self.categories,
        )
        incomplete = [*image.get("incomplete", []), *self.log.lost_since(start)]
        if incomplete and self.policy.incomplete_images == "drop":
            del self.seen[digest]  # a complete copy of these pixels may still come
            detail = "; ".join(incomplete)
            return self.log.drop_image(image, [a for a, _ in boxes], "incomplete", detail)
        if "resized" in done.changes:
            boxes = scaled_boxes(boxes, done.transform)
        file_name = digest[:20] + done.out_suffix
        os.replace(done.staged, self.out_dir / file_name)
        return file_name, list(done.changes), boxes, incomplete


def _ignore_kind(ann: dict) -> str | None:
    """The ``ignore`` kind a kept box carries on (crowd boxes always have one)."""
    if ann.get("ignore"):
        return str(ann["ignore"])
    return "crowd" if ann.get("iscrowd") else None


def _near_duplicates(out: dict, hashes: list[tuple], policy: CleanPolicy, log, folder: Path):
    """Merge near-duplicate clusters (upright, flipped or turned), copies named after one
    original and shared groups into the group of their first image
    (:mod:`detflow.data.clean_groups`); with policy ``drop``, keep only each near-duplicate
    cluster's first image."""
    pairs = near_pairs(hashes, policy.near_duplicate_distance)
    listing = pair_listing(out["images"], pairs)
    if policy.near_duplicate_policy == "drop":
        drop_cluster_members(out, clusters(len(out["images"]), pairs), log, folder)
        pairs = []
    merged = merge_groups(out["images"], pairs, name_links(out["images"]))
    return {"near_duplicate_pairs": len(listing), **merged, "near_duplicates": listing}


def _balance(out: dict, warn_above: float) -> dict:
    """Boxes per class, imbalance ratio (most / fewest boxes) and warnings."""
    per_class = manifest.class_counts(out)
    warnings = [f"class '{n}' has no boxes left" for n, c in per_class.items() if c == 0]
    ratio = None
    if per_class and not warnings:
        ratio = max(per_class.values()) / min(per_class.values())
        if ratio > warn_above:
            warnings.append(
                f"class imbalance {ratio:.1f} (most/fewest boxes) exceeds "
                f"{warn_above}; consider augment class balancing"
            )
    quality = Counter(flag for im in out["images"] for flag in im.get("quality", []))
    return {
        "class_counts": per_class,
        "imbalance_ratio": ratio,
        "warnings": warnings,
        "quality_flags": dict(sorted(quality.items())),
    }


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
        bbox = [v if _finite_number(v) else str(v) for v in ann["bbox"]]  # report stays JSON
        self.dropped.append(
            {
                "item": "box",
                "source": image["source"],
                "reason": reason,
                "annotation_id": ann["id"],
                "bbox": bbox,
            }
        )

    def lost_since(self, start: int) -> list[str]:
        """``"box <id>: <reason>"`` of the box drops after index ``start`` that leave a real
        object unlabelled."""
        return [
            f"box {d['annotation_id']}: {d['reason']}"
            for d in self.dropped[start:]
            if d["item"] == "box" and d["reason"] in LOST_OBJECT
        ]

    def report(self, source: dict, out: dict) -> dict:
        images = Counter(d["reason"] for d in self.dropped if d["item"] == "image")
        boxes = Counter(d["reason"] for d in self.dropped if d["item"] == "box")
        changed = Counter(c for im in out["images"] for c in im.get("changes", []))
        incomplete = [
            {"source": im["source"], "reasons": im["incomplete"]}
            for im in out["images"]
            if im.get("incomplete")
        ]
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
            "images_changed_by_kind": dict(sorted(changed.items())),
            "images_incomplete_kept": len(incomplete),
            "boxes_ignored": sum(1 for a in out["annotations"] if manifest.is_ignored(a)),
            "dropped": self.dropped,
            "incomplete_kept": incomplete,
        }


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
