"""Inputs for prediction: images from a file, a folder or a glob; frames from a video file, a
camera or a stream (OpenCV, imported only for those: the serving install has no OpenCV).

:func:`open_source` turns what the user typed into a :class:`Source`; iterating it yields
:class:`Item`\\ s, one per image or frame, each either decoded (``[H, W, 3]`` uint8 RGB, EXIF
orientation applied, within the pixel limit) or carrying the one-line reason it was skipped.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detflow.core.errors import DataError, require_positive
from detflow.core.images import DEFAULT_MAX_PIXELS, check_pixel_limit, load_rgb
from detflow.data.formats.common import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from detflow.deploy.stream_reader import LatestFrameReader

STREAM_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")


@dataclass(frozen=True)
class Item:
    """One image or frame: ``source`` (file, video or stream), ``frame`` (index in a video,
    None for an image file), ``name`` (relative output name), ``image`` or ``error``."""

    source: str
    frame: int | None
    name: str
    image: np.ndarray | None = None
    error: str | None = None


@dataclass
class Source:
    """``kind``: ``images`` (``paths`` under ``base``) or ``video`` (``target``: a file
    path, a camera index or a stream URL). ``live`` (cameras, streams): frames are read on
    their own thread and inference takes the newest (:mod:`detflow.deploy.stream_reader`);
    ``stats`` then holds ``frames_read``, ``dropped`` and ``reconnects``."""

    kind: str
    name: str
    paths: list[Path] = field(default_factory=list)
    base: Path | None = None
    target: str | int | None = None
    max_frames: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    fps: float = 30.0
    total: int | None = None
    live: bool = False
    reconnect_s: float = 1.0
    max_reconnects: int = 5
    stats: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[Item]:
        if self.kind == "images":
            return self._images()
        return self._frames()

    def _images(self) -> Iterator[Item]:
        for path in self.paths:
            name = path.relative_to(self.base).as_posix()
            try:
                array = np.asarray(load_rgb(path, max_pixels=self.max_pixels))
            except DataError as exc:
                yield Item(str(path), None, name, error=str(exc))
            else:
                yield Item(str(path), None, name, image=array)

    def _frames(self) -> Iterator[Item]:
        if self.live:
            yield from self._live_frames()
            return
        capture = _open_capture(self.target, self.name)
        try:
            index = 0
            while self.max_frames is None or index < self.max_frames:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield _frame_item(bgr, index, self.name, self.max_pixels)
                index += 1
        finally:
            capture.release()

    def _live_frames(self) -> Iterator[Item]:
        reader = LatestFrameReader(
            lambda: _open_capture(self.target, self.name),
            reconnect_s=self.reconnect_s,
            max_reconnects=self.max_reconnects,
        )
        frames, taken = iter(reader), 0
        try:
            while self.max_frames is None or taken < self.max_frames:
                index_bgr = next(frames, None)
                if index_bgr is None:
                    break
                taken += 1
                yield _frame_item(index_bgr[1], index_bgr[0], self.name, self.max_pixels)
                self.stats = reader.stats()
        finally:
            reader.close()
            self.stats = reader.stats()


def open_source(
    spec: str | Path,
    *,
    max_frames: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Source:
    """What ``spec`` names: a camera index (``0``), a stream URL (``rtsp://…``), a video file
    (by suffix), an image file, a folder of images (recursive) or a glob (``imgs/*.jpg``).

    ``max_frames`` stops videos, cameras and streams after that many frames.
    Raises DataError when nothing matches.
    """
    if max_frames is not None:
        require_positive("max_frames", max_frames, integer=True)
    require_positive("max_pixels", max_pixels, integer=True)
    text = str(spec)
    common = {"max_frames": max_frames, "max_pixels": max_pixels}
    if text.isdigit():
        return _video(f"camera{text}", int(text), live=True, **common)
    if text.lower().startswith(STREAM_SCHEMES):
        return _video("stream", text, live=True, **common)
    path = Path(text)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return _video(path.stem, str(path), **common)
    if path.is_file():
        return _images([path], path.parent, text, max_pixels)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return _images(found, path, text, max_pixels)
    if glob.has_magic(text):
        found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        return _images(found, _common_parent(found), text, max_pixels)
    raise DataError(
        f"{text}: no such image, folder, video or glob; "
        "give an image, a folder, a glob, a video file, a camera index or a stream URL"
    )


def _images(paths: list[Path], base: Path | None, text: str, max_pixels: int) -> Source:
    if not paths:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(f"{text}: no images found (looked for {suffixes})")
    return Source("images", text, paths=paths, base=base, max_pixels=max_pixels, total=len(paths))


def _video(name: str, target: str | int, *, max_frames, max_pixels, live=False) -> Source:
    import cv2  # the pipeline extra's; not needed for images

    capture = _open_capture(target, name)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        check_pixel_limit(width, height, name=str(target), max_pixels=max_pixels)  # pre-decode
    finally:
        capture.release()
    total = count if count > 0 else None
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames
    return Source(
        "video",
        name,
        target=target,
        max_frames=max_frames,
        max_pixels=max_pixels,
        fps=fps if fps and 0 < fps <= 1000 else 30.0,
        total=total,
        live=live,
    )


def _open_capture(target: str | int, name: str):
    """An opened ``cv2.VideoCapture`` on ``target``; DataError when it cannot be opened."""
    import cv2

    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        capture.release()
        raise DataError(
            f"{target}: OpenCV cannot open {name} (missing file, unsupported codec, "
            "no such camera or unreachable stream); check the source"
        )
    return capture


def _frame_item(bgr: np.ndarray, index: int, name: str, max_pixels: int) -> Item:
    height, width = bgr.shape[:2]
    label = f"{name} frame {index}"
    try:
        check_pixel_limit(width, height, name=label, max_pixels=max_pixels)
    except DataError as exc:
        return Item(name, index, f"{name}_{index:06d}", error=str(exc))
    import cv2

    if bgr.ndim == 2:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    else:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return Item(name, index, f"{name}_{index:06d}", image=rgb)


def _common_parent(paths: list[Path]) -> Path | None:
    """The deepest folder holding all ``paths`` (all relative or all absolute, as glob gives)."""
    return Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else None
