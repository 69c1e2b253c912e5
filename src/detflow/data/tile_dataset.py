"""A tiled canonical dataset: ``size`` × ``size`` tiles cut from each image of one split.

Tiling runs per split, after the split stage: every tile of an image stays in its image's
split (and its ``group``), and records where it came from in ``tile``: ``{"image_id",
"file_name", "window": [x0, y0, x1, y1]}`` (source image pixels, ``x1``/``y1`` exclusive).

Boxes (COCO ``xywh`` pixels of the tile) are clipped to their tile. A box cut by a tile edge
is kept when at least ``min_visible`` of its area lies in the tile; otherwise it is carried
with ``ignore: "cut"`` (``iscrowd`` 0): evaluation ignores it, as a crowd region, and
training leaves it out of the targets (:func:`detflow.data.manifest.is_ignored`), so it is
neither a half box nor counted; with ``fill_ignored`` its visible part (outside trainable
boxes) is painted over, so the model does not see it as background either. Boxes already
ignored (difficult, crowd) stay ignored with their own reason. A tile without a trainable
box is *empty*; ``empty_rate`` of them are kept, chosen by ``seed``.

Tiles are PNG (lossless), padded at the bottom and right with black to ``size`` × ``size``
where the image is smaller than a tile. The output folder is written atomically and is
byte-identical for the same input, options and seed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from detflow.core.boxes import xywh_to_xyxy, xyxy_to_xywh
from detflow.core.errors import ConfigError, DataError, require_positive
from detflow.core.files import atomic_dir
from detflow.core.images import DEFAULT_MAX_PIXELS, load_rgb
from detflow.data import manifest
from detflow.data.tiles import check_tiles, tile_boxes, tile_windows

CUT = "cut"  # the ignore reason of a box cut by a tile edge, less than min_visible visible
PNG_COMPRESS_LEVEL = 1  # tiles are intermediate training data: favour speed
BOX_DECIMALS = 3


@dataclass(frozen=True)
class TileJob:
    """One window of one source image and its boxes: ``(category_id, xyxy tile pixels,
    ignore reason or None)`` each, with the counting status of each box."""

    image: dict
    window: tuple
    boxes: tuple
    statuses: tuple

    @property
    def empty(self) -> bool:
        return all(ignore for _, _, ignore in self.boxes)

    @property
    def out_name(self) -> str:
        x0, y0 = self.window[:2]
        return f"{Path(self.image['file_name']).stem}_{self.image['id']}_{x0}_{y0}.png"


def tile_dataset(
    dataset: dict,
    *,
    images_dir: str | Path,
    out_dir: str | Path,
    size: int,
    overlap: int,
    min_visible: float = 0.5,
    empty_rate: float,
    seed: int,
    fill_ignored: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[dict, dict]:
    """Cut every image of ``dataset`` (canonical, images in ``images_dir``) into tiles
    (:func:`detflow.data.tiles.tile_windows`; ``overlap`` in pixels) written to ``out_dir``.
    Returns ``(the tiled canonical dataset, its file names relative to out_dir; counts)``,
    as :func:`tiled_manifest`."""
    _check(min_visible=min_visible, empty_rate=empty_rate, seed=seed, fill_ignored=fill_ignored)
    out, counts, jobs = _tiled(
        dataset, size=size, overlap=overlap, min_visible=min_visible, empty_rate=empty_rate,
        seed=seed,
    )  # fmt: skip
    with atomic_dir(out_dir) as tmp:
        for image_jobs in _by_image(jobs):
            pixels = _pixels(Path(images_dir), image_jobs[0].image, max_pixels)
            for job in image_jobs:
                _write_tile(pixels, job, tmp / job.out_name, size=size, fill=fill_ignored)
    return out, counts


def tiled_manifest(
    dataset: dict, *, size: int, overlap: int, min_visible: float = 0.5, empty_rate: float,
    seed: int,
) -> tuple[dict, dict]:  # fmt: skip
    """The canonical dataset :func:`tile_dataset` would write, and its counts, without
    reading or writing a pixel (what a training plan measures the tiles by).

    Counts: ``images_in``, ``tiles`` (all windows), ``tiles_out``, ``boxes_in`` (trainable
    boxes of the source), ``boxes_whole`` / ``boxes_cut_kept`` / ``boxes_cut_ignored`` /
    ``boxes_ignored_in`` (box instances in the tiles written), ``boxes_never_whole`` (source
    boxes whole in no tile), ``empty_tiles_kept`` / ``empty_tiles_dropped``.
    """
    _check(min_visible=min_visible, empty_rate=empty_rate, seed=seed, fill_ignored=None)
    out, counts, _ = _tiled(
        dataset, size=size, overlap=overlap, min_visible=min_visible, empty_rate=empty_rate,
        seed=seed,
    )  # fmt: skip
    return out, counts


def _tiled(dataset, *, size, overlap, min_visible, empty_rate, seed):
    """The tiled dataset, its counts and the tile jobs kept, in order."""
    check_tiles(size=size, overlap=overlap)
    jobs, counts = plan_tiles(dataset, size=size, overlap=overlap, min_visible=min_visible)
    kept = sample_empty(jobs, empty_rate=empty_rate, seed=seed)
    out = manifest.new_dataset(class_names=manifest.class_names(dataset))
    out["info"] = {**dataset.get("info", {}), "tiles": {"size": size, "overlap": overlap}}
    written = [job for i, job in enumerate(jobs) if i in kept]
    for job in written:
        _add_tile(out, job, size=size)
    statuses = Counter(s for job in written for s in job.statuses)
    empty = sum(job.empty for job in jobs)
    empty_kept = sum(job.empty for job in written)
    counts.update(
        tiles_out=len(written),
        boxes_whole=statuses["whole"],
        boxes_cut_kept=statuses["kept"],
        boxes_cut_ignored=statuses["ignored"],
        boxes_ignored_in=statuses["ignored_in"],
        empty_tiles_kept=empty_kept,
        empty_tiles_dropped=empty - empty_kept,
    )
    return out, counts, written


def _check(*, min_visible, empty_rate, seed, fill_ignored) -> None:
    require_positive("tiles.min_visible", min_visible)
    require_positive("tiles.empty_rate", empty_rate, allow_zero=True)
    for key, value in (("tiles.min_visible", min_visible), ("tiles.empty_rate", empty_rate)):
        if value > 1:
            raise ConfigError(f"{key}={value!r} must be a share in 0..1")
    require_positive("tiles.seed", seed, allow_zero=True, integer=True)
    if fill_ignored is not None and not (isinstance(fill_ignored, int) and 0 <= fill_ignored < 256):
        raise ConfigError(f"tiles.fill_ignored={fill_ignored!r} must be null or a gray 0..255")


def plan_tiles(dataset: dict, *, size: int, overlap: int, min_visible: float):
    """Every window of every image with its boxes, in image order, row by row; and the
    counts known before sampling (``images_in``, ``tiles``, ``boxes_in``,
    ``boxes_never_whole``). Reads no pixels."""
    boxes_of = manifest.annotations_by_image(dataset)
    jobs, never_whole, boxes_in = [], 0, 0
    for image in dataset["images"]:
        anns = boxes_of.get(image["id"], [])
        xyxy = xywh_to_xyxy([a["bbox"] for a in anns])
        whole = np.zeros(len(anns), dtype=bool)
        windows = tile_windows(image["width"], image["height"], size=size, overlap=overlap)
        for window in windows:
            index, clipped, status = tile_boxes(xyxy, window, min_visible=min_visible)
            whole[index[status == "whole"]] = True
            jobs.append(_job(image, window, [anns[i] for i in index], clipped, status))
        trainable = np.array([not manifest.is_ignored(a) for a in anns], dtype=bool)
        boxes_in += int(trainable.sum())
        never_whole += int((trainable & ~whole).sum())
    counts = {"images_in": len(dataset["images"]), "tiles": len(jobs), "boxes_in": boxes_in}
    return jobs, {**counts, "boxes_never_whole": never_whole}


def _job(image: dict, window: tuple, anns: list, clipped: np.ndarray, status) -> TileJob:
    boxes, statuses = [], []
    for ann, box, state in zip(anns, clipped.round(BOX_DECIMALS).tolist(), status, strict=True):
        if manifest.is_ignored(ann):
            ignore, state = ann.get("ignore") or "crowd", "ignored_in"
        else:
            ignore = CUT if state == "ignored" else None
        boxes.append((int(ann["category_id"]), box, ignore))
        statuses.append(str(state))
    return TileJob(image, tuple(window), tuple(boxes), tuple(statuses))


def sample_empty(jobs: list[TileJob], *, empty_rate: float, seed: int) -> set[int]:
    """Indices of the jobs to write: every tile with a trainable box, and
    ``round(empty_rate × empty tiles)`` empty ones drawn by ``seed``."""
    empty = [i for i, job in enumerate(jobs) if job.empty]
    count = round(empty_rate * len(empty))
    drawn = np.random.default_rng(seed).permutation(len(empty))[:count]
    return {i for i, job in enumerate(jobs) if not job.empty} | {empty[k] for k in drawn}


def _by_image(jobs: list[TileJob]) -> list[list[TileJob]]:
    groups: dict[int, list[TileJob]] = {}
    for job in jobs:
        groups.setdefault(job.image["id"], []).append(job)
    return list(groups.values())


def _pixels(images_dir: Path, image: dict, max_pixels: int) -> np.ndarray:
    path = images_dir / image["file_name"]
    pixels = np.asarray(load_rgb(path, max_pixels=max_pixels))
    expected = (image["height"], image["width"])
    if pixels.shape[:2] != expected:
        raise DataError(
            f"{path}: decoded {pixels.shape[1]}x{pixels.shape[0]}, but the dataset says "
            f"{expected[1]}x{expected[0]}; rerun collect and clean on this data"
        )
    return pixels


def _write_tile(pixels: np.ndarray, job: TileJob, path: Path, *, size: int, fill) -> None:
    x0, y0, x1, y1 = job.window
    tile = np.zeros((size, size, 3), dtype=np.uint8)
    tile[: y1 - y0, : x1 - x0] = pixels[y0:y1, x0:x1]
    if fill is not None:
        _paint_ignored(tile, job.boxes, fill)
    Image.fromarray(tile).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def _paint_ignored(tile: np.ndarray, boxes: tuple, fill: int) -> None:
    """Paint the cut-ignored boxes of ``tile`` gray ``fill``, except where a trainable box
    lies."""
    mask = np.zeros(tile.shape[:2], dtype=bool)
    for value, wanted in ((True, CUT), (False, None)):
        for _, (bx0, by0, bx1, by1), ignore in boxes:
            if ignore == wanted:
                xs, ys = slice(int(bx0), int(np.ceil(bx1))), slice(int(by0), int(np.ceil(by1)))
                mask[ys, xs] = value
    tile[mask] = fill


def _add_tile(out: dict, job: TileJob, *, size: int) -> None:
    image = job.image
    extra = {k: image[k] for k in ("split", "incomplete") if k in image}
    tile = {"image_id": image["id"], "file_name": image["file_name"], "window": list(job.window)}
    new_id = manifest.add_image(
        out,
        file_name=job.out_name,
        width=size,
        height=size,
        source=image["source"],
        group=image["group"],
        tile=tile,
        **extra,
    )
    for category_id, box, ignore in job.boxes:
        xywh = xyxy_to_xywh(box)[0].round(BOX_DECIMALS)
        manifest.add_box(out, image_id=new_id, category_id=category_id, xywh=xywh, ignore=ignore)
