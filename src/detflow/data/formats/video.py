"""Video reader: frames sampled from one video file or every video under a folder (OpenCV).

Frames are taken every ``every_n_frames`` frames or every ``every_seconds`` seconds, at most
``max_frames`` per video, optionally skipping a frame whose perceptual hash
(:func:`detflow.data.near_duplicates.perceptual_hash`) is within ``skip_similar`` bits of the
previous kept frame. Frames have no boxes (no box format applies) and are marked unlabelled,
for labelling later; every frame of a video shares one ``group`` (the video's path), so a
split never separates them.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import cv2
from PIL import Image
from tqdm import tqdm

from detflow.core.errors import ConfigError, DataError, require_choice, require_positive
from detflow.core.images import DEFAULT_MAX_PIXELS, check_pixel_limit
from detflow.data.formats.base import SourceImage, SourceScan
from detflow.data.formats.common import VIDEO_SUFFIXES
from detflow.data.near_duplicates import hamming, perceptual_hash

FRAME_FORMATS = {"png": "PNG", "jpg": "JPEG"}


def read_video(
    path: str | Path,
    *,
    workdir: Path,
    every_n_frames: int | None = None,
    every_seconds: float | None = None,
    max_frames: int | None = None,
    skip_similar: int | None = None,
    names: list[str] | None = None,
    frame_format: str = "png",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceScan:
    """Sample frames of the video(s) at ``path``; encoded frames are written to ``workdir``.

    ``names`` are the classes the frames will be labelled with (the dataset needs at least
    one class). An unreadable video is listed as dropped.
    """
    _check_options(every_n_frames, every_seconds, max_frames, skip_similar, frame_format)
    path = Path(path)
    if path.is_dir():
        root, videos = path, sorted(p for p in path.rglob("*") if _is_video(p))
    elif path.is_file():
        root, videos = path.parent, [path]
    else:
        raise DataError(f"{path}: video file or folder not found; set data.path")
    if not videos:
        raise DataError(f"{path}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
    scan = SourceScan(class_names=[str(n) for n in names or []])
    options = {
        "every_n_frames": every_n_frames,
        "every_seconds": every_seconds,
        "max_frames": max_frames,
        "skip_similar": skip_similar,
        "frame_format": frame_format,
        "max_pixels": max_pixels,
    }
    for number, video in enumerate(videos):
        rel = video.relative_to(root).as_posix()
        out = workdir / f"video{number:04d}"
        out.mkdir(parents=True, exist_ok=True)
        _read_one(video, rel, out, scan, **options)
    return scan


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def _check_options(every_n_frames, every_seconds, max_frames, skip_similar, frame_format):
    if (every_n_frames is None) == (every_seconds is None):
        raise ConfigError(
            f"data.every_n_frames={every_n_frames!r} and data.every_seconds={every_seconds!r}: "
            "set exactly one of them (the other null)"
        )
    if every_n_frames is not None:
        require_positive("data.every_n_frames", every_n_frames)
    if every_seconds is not None:
        require_positive("data.every_seconds", every_seconds)
    if max_frames is not None:
        require_positive("data.max_frames", max_frames)
    if skip_similar is not None:
        require_positive("data.skip_similar", skip_similar, allow_zero=True)
    require_choice("data.frame_format", frame_format, tuple(FRAME_FORMATS))


def _read_one(video: Path, rel: str, out: Path, scan: SourceScan, **options) -> None:
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            scan.drop(rel, "video", "unreadable_video", "OpenCV cannot open it")
            return
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        try:
            check_pixel_limit(width, height, name=rel, max_pixels=options["max_pixels"])
        except DataError as exc:
            scan.drop(rel, "video", "over_pixel_limit", str(exc))
            return
        step = _step(capture, options["every_n_frames"], options["every_seconds"])
        if step is None:
            scan.drop(rel, "video", "unknown_fps", "no frame rate; use data.every_n_frames")
            return
        _sample(capture, rel, out, scan, step=step, **options)
    finally:
        capture.release()


def _step(capture, every_n_frames, every_seconds) -> float | None:
    if every_n_frames is not None:
        return float(every_n_frames)
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not fps or not math.isfinite(fps) or fps <= 0:
        return None
    return every_seconds * fps


def _sample(capture, rel, out, scan, *, step, max_frames, skip_similar, frame_format, **_):
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    kept, next_index, previous = 0, 0.0, None
    progress = tqdm(total=total, desc=f"frames {rel}", unit="frame", leave=False, disable=None)
    index = -1
    while max_frames is None or kept < max_frames:
        if not capture.grab():
            break
        index += 1
        progress.update(1)
        if index + 1e-6 < next_index:
            continue
        next_index += step * max(1, math.floor((index - next_index) / step) + 1)
        ok, frame = capture.retrieve()
        if not ok:
            scan.drop(f"{rel}#frame={index:06d}", "frame", "unreadable_frame", "decode failed")
            continue
        image = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        if skip_similar is not None:
            digest = perceptual_hash(image)
            if previous is not None and hamming(digest, previous[1]) <= skip_similar:
                distance = hamming(digest, previous[1])
                detail = f"phash distance {distance} to frame {previous[0]}"
                scan.drop(f"{rel}#frame={index:06d}", "frame", "near_identical_frame", detail)
                continue
            previous = (index, digest)
        _keep(image, index, rel, out, scan, frame_format)
        kept += 1
    progress.close()


def _keep(image: Image.Image, index: int, rel: str, out: Path, scan, frame_format: str) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format=FRAME_FORMATS[frame_format], **_encode_options(frame_format))
    target = out / f"{index:06d}.{frame_format}"
    target.write_bytes(buffer.getvalue())
    scan.images.append(
        SourceImage(
            source=f"{rel}#frame={index:06d}",
            group=rel,
            width=image.width,
            height=image.height,
            boxes=[],
            path=target,
            labelled=False,
        )
    )


def _encode_options(frame_format: str) -> dict:
    return {"quality": 95} if frame_format == "jpg" else {}
