"""clean's per-image work, spread over processes: read, decode once, and from the decoded
pixels the exact-duplicate digest, the resize, the encoded output, the quality flags and the
perceptual hash.

:func:`analyse_image` depends on one image's file and the policy only, so any number of
workers gives the same records; :func:`analyse_all` returns them in the input order (what
depends on the order, duplicates, boxes and the report, stays with the caller, in one
process). Nothing else decodes the image: the hash and the flags share one grayscale copy.
The worker also writes the output file, to a staging name (the image's position), so that
its bytes never pass through the caller, which moves it to its name or deletes it.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import signal
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from detflow.core.errors import DataError
from detflow.core.images import PixelLimitError, decode_with_info, resize_policy
from detflow.data.near_duplicates import dihedral_perceptual_hashes
from detflow.data.quality import quality_flags

FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png"}
PIXEL_CHANGES = frozenset({"repaired", "exif_rotated", "converted_to_rgb", "resized"})
# images per task sent to a worker: fewer tasks cost the main process less (5 000 images, 2
# workers: 16 an image took 0.59 s of its CPU, 64 0.45 s), but at most 1/16 of a worker's
# share, so that the workers end close together
CHUNK = 64


@dataclass(frozen=True)
class Analysed:
    """One image as decoded: ``dropped`` = (reason, detail) when it cannot be used; else the
    digest of its oriented RGB pixels, ``size`` (width, height) of those pixels (the boxes'
    frame), ``orientation`` (EXIF), ``changes``, ``transform`` (resize: scale_x, scale_y,
    offset_x, offset_y), ``out_size`` and ``out_bytes`` + ``out_suffix`` (the file to write:
    the source bytes when they already are these pixels, else PNG; :func:`analyse_all` writes
    the bytes to the file ``staged`` and empties ``out_bytes``), ``quality`` flags and
    ``phashes`` (the 64-bit perceptual hashes of the output pixels in the 8 orientations,
    upright first: :func:`~detflow.data.near_duplicates.dihedral_perceptual_hashes`)."""

    dropped: tuple[str, str] | None = None
    digest: str = ""
    size: tuple[int, int] = (0, 0)
    orientation: int = 1
    changes: list[str] = field(default_factory=list)
    transform: tuple[float, float, float, float] = (1.0, 1.0, 0.0, 0.0)
    out_size: tuple[int, int] = (0, 0)
    out_bytes: bytes = b""
    out_suffix: str = ""
    quality: list[str] = field(default_factory=list)
    phashes: tuple[int, ...] = ()
    staged: Path | None = None


def analyse_image(path: Path, *, name: str, file_name: str, policy) -> Analysed:
    """Decode ``path`` once (``name``: the image's source, for messages; ``file_name``: its
    name in the manifest, for the extension check) under ``policy`` (a CleanPolicy)."""
    try:
        data = path.read_bytes()
    except OSError as exc:  # the reason only: no absolute path in the report
        return Analysed(dropped=("unreadable_image", exc.strerror or type(exc).__name__))
    changes = []
    try:
        rgb, info = decode_with_info(data, name=name, max_pixels=policy.max_pixels)
    except PixelLimitError as exc:
        return Analysed(dropped=("too_many_pixels", str(exc)))
    except DataError as exc:
        if policy.broken_images == "drop":
            return Analysed(dropped=("unreadable_image", str(exc)))
        try:
            rgb, info = decode_with_info(
                data, name=name, max_pixels=policy.max_pixels, allow_truncated=True
            )
        except DataError as again:
            return Analysed(dropped=("unreadable_image", str(again)))
        changes.append("repaired")
    if info["orientation"] not in (0, 1):
        changes.append("exif_rotated")
    if info["mode"] != "RGB":
        changes.append("converted_to_rgb")
    expected = FORMAT_SUFFIX.get(info["format"])
    if expected and Path(file_name).suffix.lower() not in (expected, ".jpeg"):
        changes.append("wrong_extension")
    pixels = hashlib.sha256(rgb.tobytes())
    pixels.update(repr(rgb.size).encode())  # the digest of the two joined, without a copy
    digest = pixels.hexdigest()
    out, transform = resize_policy(rgb, mode=policy.resize, size=policy.resize_size)
    if transform != (1.0, 1.0, 0.0, 0.0):
        changes.append("resized")
    out_bytes, suffix = _encoded(data, out, info["format"], changes)
    gray = out.convert("L")  # shared by the flags and the hash (both work on luminance)
    return Analysed(
        digest=digest,
        size=rgb.size,
        orientation=info["orientation"],
        changes=changes,
        transform=transform,
        out_size=out.size,
        out_bytes=out_bytes,
        out_suffix=suffix,
        quality=quality_flags(gray, policy.quality),
        phashes=dihedral_perceptual_hashes(gray),
    )


def _encoded(data: bytes, rgb, fmt, changes) -> tuple[bytes, str]:
    """The original bytes when they already are this RGB image; else PNG."""
    if fmt in FORMAT_SUFFIX and not PIXEL_CHANGES & set(changes):
        return data, FORMAT_SUFFIX[fmt]
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return buffer.getvalue(), ".png"


def _analyse_chunk(
    start: int, items: list[tuple[Path, str, str]], *, policy, stage_dir: Path
) -> list[Analysed]:
    """:func:`analyse_image` of ``items``, the output of the item at position ``start + k``
    written to ``stage_dir / <this process id> / f"{start + k}{suffix}"``: a folder per
    process, as creating files in one folder from several processes serialises on it (ext4
    here: 2 processes creating files took 0.18 ms a file in one shared folder, 0.07 ms in a
    folder each)."""
    done, folder = [], stage_dir / str(os.getpid())
    folder.mkdir(exist_ok=True)
    for position, (path, name, file_name) in enumerate(items, start):
        analysed = analyse_image(path, name=name, file_name=file_name, policy=policy)
        if analysed.dropped is None:
            staged = folder / f"{position}{analysed.out_suffix}"
            staged.write_bytes(analysed.out_bytes)
            analysed = replace(analysed, out_bytes=b"", staged=staged)
        done.append(analysed)
    return done


def worker_count(workers: int | None) -> int:
    """``workers`` processes, or this machine's cores for None / 0."""
    return workers or os.cpu_count() or 1


def analyse_all(
    items: list[tuple[Path, str, str]],
    *,
    policy,
    stage_dir: Path,
    workers: int | None = None,
):
    """:func:`analyse_image` of each ``(path, name, file_name)``, yielded in input order,
    each usable image's output file written under ``stage_dir`` (its ``staged``: the caller
    moves or deletes it); ``workers`` processes (None: one per core; 1: this process). At
    most a few chunks per worker are in flight, so memory stays flat however many images
    there are."""
    workers = worker_count(workers)
    size = max(1, min(CHUNK, len(items) // (16 * workers)))
    starts = range(0, len(items), size)
    work = partial(_analyse_chunk, policy=policy, stage_dir=Path(stage_dir))
    if workers == 1 or len(starts) <= 1:
        for start in starts:
            yield from work(start, items[start : start + size])
        return
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_start_worker, initargs=(os.getpid(),)
    ) as pool:
        pending: deque = deque()
        for start in starts:
            pending.append(pool.submit(work, start, items[start : start + size]))
            if len(pending) >= 4 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def _start_worker(parent: int) -> None:
    """Worker initializer: :func:`_die_with` the parent. The worker's BLAS is left as the
    fork left it: the per-image NumPy products (8 x 32 x 32, a 256-long dot) are below
    OpenBLAS's threading thresholds, and setting its thread count in a forked worker
    (threadpoolctl) started an OpenBLAS thread per worker that took the core for 5-9 ms
    every few images (1 000 images, 2 workers: 0.67-0.72 s against 0.64-0.66 s without)."""
    _die_with(parent)


def _die_with(parent: int) -> None:
    """End this worker when the clean process ends (killed or crashed), so that no orphan
    keeps running or holds the stage's output pipes open (Linux: ``PR_SET_PDEATHSIG``;
    elsewhere the executor's own shutdown applies)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the line above
        os._exit(1)
