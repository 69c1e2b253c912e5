"""augment: bbox-safe albumentations pipeline from config, applied to the train split only.

Boxes are ``xyxy`` pixels (albumentations ``pascal_voc``), transformed with the image, clipped
to it and dropped below ``min_visibility`` / ``min_area``; every dropped box is counted.
Transformed boxes are rounded to 1/1000 px (albumentations works in normalised float32). Each
augmented copy is seeded from ``(seed, file name, copy)``, so the output is byte-identical
whatever the number of worker processes or the order they finish in.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import warnings
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from detflow.core.boxes import xywh_to_xyxy, xyxy_to_xywh
from detflow.core.draw import draw_boxes, image_grid
from detflow.core.errors import ConfigError, DataError, require_positive
from detflow.core.faults import maybe_kill
from detflow.core.files import atomic_dir, atomic_file
from detflow.core.images import DEFAULT_MAX_PIXELS, load_rgb, require_pixel_limit
from detflow.core.options import ConfigOptions
from detflow.data import manifest

PNG_COMPRESS_LEVEL = 1  # augmented copies are intermediate training data: favour speed
BOX_DECIMALS = 3  # albumentations computes in normalised float32; keep 1/1000 px


@dataclass(frozen=True, kw_only=True)
class AugmentOptions(ConfigOptions):
    """The validated ``augment.*`` (see conf/augment/), with the run's ``seed`` and
    ``limits.max_pixels``: ``AugmentOptions.from_config(cfg["augment"], seed=…,
    max_pixels=…)``. The transforms are checked by building the pipeline once."""

    SECTION = "augment"

    copies: int = 1
    min_visibility: float = 0.3
    min_area: float = 4.0
    balance_ratio: float | None = None
    workers: int = 0
    preview_samples: int = 8
    transforms: list[dict] = field(default_factory=list)
    seed: int = field(default=0, metadata={"key": "seed"})
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"key": "limits.max_pixels"})

    def check(self) -> None:
        require_positive("augment.copies", self.copies, allow_zero=True)
        if not 0.0 <= float(self.min_visibility) <= 1.0:
            raise ConfigError(f"augment.min_visibility={self.min_visibility!r} must be in [0, 1]")
        require_positive("augment.min_area", self.min_area, allow_zero=True)
        if self.balance_ratio is not None and not 0.0 <= float(self.balance_ratio) <= 1.0:
            raise ConfigError(
                f"augment.balance_ratio={self.balance_ratio!r} must be null or in (0, 1]"
            )
        require_positive("augment.workers", self.workers, allow_zero=True)
        require_positive("augment.preview_samples", self.preview_samples)
        require_pixel_limit(self.max_pixels)
        build_pipeline(
            transforms=self.transforms, min_visibility=self.min_visibility, min_area=self.min_area
        )


def build_pipeline(*, transforms: list[dict], min_visibility: float, min_area: float) -> A.Compose:
    """An albumentations ``Compose`` from ``[{name: Transform, **kwargs}, …]`` (with the
    ``augment.*`` options' ``min_visibility`` and ``min_area``).

    Composition transforms (``OneOf``, ``SomeOf``, ``Sequential``) take a nested
    ``transforms:`` list. Raises ConfigError naming the transform and albumentations' message.
    """
    params = A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        clip=True,
        min_visibility=min_visibility,
        min_area=min_area,
    )
    built = _build_list(transforms, "augment.transforms")
    with warnings.catch_warnings():  # an empty list is valid: copies then equal the originals
        warnings.filterwarnings("ignore", "Got processor for bboxes, but no transform")
        return A.Compose(built, bbox_params=params, seed=0)


def _build_list(specs, key: str) -> list:
    if not isinstance(specs, list | tuple):
        raise ConfigError(f"{key} must be a list of {{name: Transform, …}} entries")
    return [_build_one(spec, f"{key}[{index}]") for index, spec in enumerate(specs)]


def _build_one(spec, key: str):
    spec = dict(spec)
    name = spec.pop("name", None)
    cls = getattr(A, str(name), None)
    is_compose = isinstance(cls, type) and issubclass(cls, A.BaseCompose)
    if not (isinstance(cls, type) and (issubclass(cls, A.BasicTransform) or is_compose)):
        raise ConfigError(
            f"{key}.name={name!r} is not an albumentations transform "
            "(see albumentations' transform list)"
        )
    try:
        if is_compose:
            return cls(_build_list(spec.pop("transforms", None), f"{key}.transforms"), **spec)
        return cls(**spec, strict=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} {name}: {exc}") from exc


@dataclass(frozen=True)
class CopyJob:
    """One augmented copy to make: source image file, copy number, its boxes (xyxy px)."""

    file_name: str
    copy: int
    boxes: list
    labels: list

    @property
    def out_name(self) -> str:
        return f"{Path(self.file_name).stem}_aug{self.copy}.png"


def oversample_plan(dataset: dict, *, balance_ratio: float | None) -> dict[int, int]:
    """Extra copies per image id so each class reaches ``balance_ratio`` × the majority class's
    box count (originals only; classes processed rarest first, images round-robin by id)."""
    if not balance_ratio:
        return {}
    boxes_of = manifest.annotations_by_image(dataset)
    per_image = {
        i: Counter(a["category_id"] for a in anns if not manifest.is_ignored(a))
        for i, anns in boxes_of.items()
    }
    counts = Counter()
    for image_counts in per_image.values():
        counts.update(image_counts)
    if not counts:
        return {}
    target = math.ceil(float(balance_ratio) * max(counts.values()))
    extra: Counter = Counter()
    for class_id in sorted(counts, key=lambda c: (counts[c], c)):
        holders = sorted(i for i, c in per_image.items() if c[class_id])
        turn = 0
        while counts[class_id] < target:
            image_id = holders[turn % len(holders)]
            extra[image_id] += 1
            counts.update(per_image[image_id])
            turn += 1
    return dict(extra)


def augment_dataset(
    *, train_json: str | Path, out_dir: str | Path, options: AugmentOptions
) -> dict:
    """Write ``out_dir/train.json`` + ``out_dir/images/``: each original, ``options.copies``
    augmented copies of it, plus the oversampling copies of :func:`oversample_plan`; return
    the report.

    ``options.workers``: processes (0 = all cores); the output does not depend on it.
    """
    copies = options.copies
    source = manifest.load_dataset(train_json)
    src_images = manifest.image_dir(train_json, source)
    boxes_of = manifest.annotations_by_image(source)
    extra = oversample_plan(source, balance_ratio=options.balance_ratio)
    jobs_of = _plan_jobs(source, boxes_of, copies=copies, extra=extra)
    out = manifest.new_dataset(class_names=manifest.class_names(source))
    dropped: Counter = Counter()
    with atomic_dir(out_dir) as tmp:
        folder = tmp / "images"
        folder.mkdir()
        setup = (
            options.transforms,
            options.min_visibility,
            options.min_area,
            options.seed,
            src_images,
            folder,
            options.max_pixels,
        )
        results = _run_jobs([jobs for jobs in jobs_of.values() if jobs], setup, options.workers)
        for image in source["images"]:
            shutil.copyfile(src_images / image["file_name"], folder / image["file_name"])
            boxes, labels = _boxes(boxes_of, image)
            _add(out, image, image["file_name"], image["width"], image["height"], boxes, labels)
            copies_made = next(results) if jobs_of[image["id"]] else []
            for job, (width, height, boxes, labels) in zip(
                jobs_of[image["id"]], copies_made, strict=True
            ):
                dropped.update(Counter(job.labels) - Counter(labels))
                _add(out, image, job.out_name, width, height, boxes, labels, job.file_name)
            maybe_kill("augment.image")
        manifest.save_dataset(out, tmp / "train.json", image_dir=folder)
    return _report(source, out, dropped, copies=copies, oversampled=sum(extra.values()))


def _plan_jobs(
    source: dict, boxes_of: dict, *, copies: int, extra: dict[int, int]
) -> dict[int, list[CopyJob]]:
    return {
        image["id"]: [
            CopyJob(image["file_name"], copy, *_boxes(boxes_of, image))
            for copy in range(1, copies + extra.get(image["id"], 0) + 1)
        ]
        for image in source["images"]
    }


def _boxes(boxes_of: dict, image: dict) -> tuple[list, list]:
    """``(xyxy px boxes, category ids)`` of ``image`` from ``annotations_by_image``'s map;
    ignored (difficult, crowd) boxes are left out: this split only trains, and training
    leaves them out."""
    anns = [a for a in boxes_of.get(image["id"], []) if not manifest.is_ignored(a)]
    return xywh_to_xyxy([a["bbox"] for a in anns]).tolist(), [a["category_id"] for a in anns]


def _run_jobs(per_image: list[list[CopyJob]], options: tuple, workers: int):
    """Yield, per image in order, its copies' ``(width, height, boxes, labels)``."""
    workers = min(workers or os.cpu_count() or 1, max(len(per_image), 1))
    progress = {"total": len(per_image), "desc": "augment", "unit": "img", "disable": None}
    if workers == 1:
        _init_worker(*options)
        yield from tqdm(map(_augment_image, per_image), **progress)
        return
    # forkserver, not fork: a fork after OpenCV's threads ran in this process can deadlock
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # workers fork from a server that imported us
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=options
    ) as pool:
        chunk = max(1, len(per_image) // (workers * 8))
        yield from tqdm(pool.map(_augment_image, per_image, chunksize=chunk), **progress)


_WORKER: dict = {}


def _init_worker(transforms, min_visibility, min_area, seed, src_images, folder, max_pixels):
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe
    _WORKER.update(
        pipeline=build_pipeline(
            transforms=transforms, min_visibility=min_visibility, min_area=min_area
        ),
        seed=seed,
        src_images=Path(src_images),
        folder=Path(folder),
        max_pixels=max_pixels,
    )


def _augment_image(jobs: list[CopyJob]) -> list[tuple[int, int, list, list]]:
    """All copies of one image (decoded once): ``(width, height, xyxy boxes, labels)`` each."""
    pipeline, folder = _WORKER["pipeline"], _WORKER["folder"]
    pixels = np.asarray(
        load_rgb(_WORKER["src_images"] / jobs[0].file_name, max_pixels=_WORKER["max_pixels"])
    )
    made = []
    for job in jobs:
        pipeline.set_random_seed(item_seed(_WORKER["seed"], job.file_name, job.copy))
        boxes = np.asarray(job.boxes, dtype=float).reshape(-1, 4)
        result = pipeline(image=pixels, bboxes=boxes, labels=job.labels)
        Image.fromarray(result["image"]).save(
            folder / job.out_name, format="PNG", compress_level=PNG_COMPRESS_LEVEL
        )
        height, width = result["image"].shape[:2]
        kept = np.asarray(result["bboxes"], dtype=float).reshape(-1, 4).round(BOX_DECIMALS)
        made.append((width, height, kept.tolist(), [int(x) for x in result["labels"]]))
    return made


def item_seed(seed: int, file_name: str, copy: int) -> int:
    """The albumentations seed of copy ``copy`` of ``file_name``."""
    return zlib.crc32(f"{seed}:{file_name}:{copy}".encode())


def _add(out, image, file_name, width, height, xyxy, labels, augmented_from=None):
    new_id = manifest.add_image(
        out,
        file_name=file_name,
        width=width,
        height=height,
        source=image["source"],
        group=image["group"],
        augmented_from=augmented_from,
    )
    for box, label in zip(
        xyxy_to_xywh(np.asarray(xyxy, dtype=float).reshape(-1, 4)), labels, strict=True
    ):
        manifest.add_box(out, image_id=new_id, category_id=int(label), xywh=box)


def _report(source: dict, out: dict, dropped: Counter, *, copies: int, oversampled: int) -> dict:
    names = {c["id"]: c["name"] for c in source["categories"]}
    return {
        "images_in": len(source["images"]),
        "images_out": len(out["images"]),
        "boxes_in": len(source["annotations"]),
        "boxes_out": len(out["annotations"]),
        "boxes_ignored_in": sum(1 for a in source["annotations"] if manifest.is_ignored(a)),
        "boxes_dropped": sum(dropped.values()),
        "boxes_dropped_per_class": {names[c]: dropped.get(c, 0) for c in sorted(names)},
        "copies": copies,
        "oversampled_copies": oversampled,
        "class_boxes_in": manifest.class_counts(source),
        "class_boxes_out": manifest.class_counts(out),
    }


def write_preview(
    *, augmented_json: str | Path, out_png: str | Path, samples: int, cell: int = 256
) -> int:
    """A PNG grid, ground-truth boxes drawn: the first ``samples`` originals (in file order)
    that have a copy, each beside its first augmented copy; without copies (``augment=none``),
    the first ``samples`` (``augment.preview_samples``) originals. Always written (it is a DVC
    plot). Returns images drawn."""
    dataset = manifest.load_dataset(augmented_json)
    folder = manifest.image_dir(augmented_json, dataset)
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    by_name = {im["file_name"]: im for im in dataset["images"]}
    firsts = {}
    for image in dataset["images"]:
        firsts.setdefault(image.get("augmented_from"), image)
    pairs = [(by_name[src], aug) for src, aug in firsts.items() if src][:samples]
    shown = [im for pair in pairs for im in pair] or dataset["images"][:samples]
    if not shown:
        raise DataError(f"{augmented_json}: no images to preview; the train split is empty")
    boxes_of = manifest.annotations_by_image(dataset)
    tiles = [_drawn(boxes_of, folder, image, names) for image in shown]
    with atomic_file(out_png) as tmp:
        Image.fromarray(image_grid(tiles, columns=4, cell=cell)).save(tmp, format="PNG")
    return len(tiles)


def _drawn(boxes_of: dict, folder: Path, image: dict, names: dict) -> np.ndarray:
    boxes, labels = _boxes(boxes_of, image)
    pixels = np.asarray(load_rgb(folder / image["file_name"]))
    return draw_boxes(pixels, boxes=boxes, labels=labels, names=names)
