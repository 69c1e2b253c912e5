"""predict: run a deployed or exported detflow ONNX model with ONNX Runtime on images, folders,
globs, videos, cameras and streams — nothing from the training stack: no torch is imported
(:mod:`detflow.deploy.onnx_detector`).

Preprocessing (resize, normalise) and NMS are in the graph; the rest of the post-processing
comes from the model's ``detflow_postprocess`` metadata, so the detections equal the evaluate
stage's on the same image. The exported graph takes one ``[3, H, W]`` image: images and
frames run one at a time (batch 1).

Outputs under ``out_dir`` (written in a temporary folder, renamed into place at the end):
``predictions.jsonl`` (one record per image or frame, boxes ``xyxy`` pixels of the image),
``images/`` (annotated copies, for image sources) or ``<name>.mp4`` (annotated video, for
videos, cameras and streams) and ``summary.json``.
"""

from __future__ import annotations

import glob
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from detflow.core.draw import draw_boxes
from detflow.core.errors import DetflowError
from detflow.core.files import atomic_dir, write_json
from detflow.core.images import DEFAULT_MAX_PIXELS
from detflow.deploy.predict_inputs import Item, Source, open_source
from detflow.deploy.runtime import (
    PROVIDERS,
    detect,
    detection_list,
    image_input,
    model_threshold,
    open_model,
    providers_for,
)

SAVE_AS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}
__all__ = [  # re-exported from detflow.deploy.runtime for callers of this module
    "PROVIDERS",
    "image_input",
    "open_model",
    "predict_source",
    "providers_for",
]


def detection_record(item: Item, output: dict, class_names: list[str], latency_ms: float) -> dict:
    """One JSON Lines record: source, frame, image size and the detections (``box`` xyxy
    pixels, ``class``, ``class_id`` 1..C, ``score``), highest score first."""
    height, width = item.image.shape[:2]
    return {
        "source": item.source,
        "frame": item.frame,
        "width": width,
        "height": height,
        "detections": detection_list(output, class_names),
        "latency_ms": round(latency_ms, 3),
    }


def predict_source(
    *,
    model: str | Path,
    source: str | Path,
    out_dir: str | Path | None = None,
    provider: str = "cpu",
    score_threshold: float | None = None,
    max_frames: int | None = None,
    save_visuals: bool = True,
    threads: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> dict:
    """Run ``model`` on every image or frame of ``source`` (see
    :func:`detflow.deploy.predict_inputs.open_source`); write the outputs under ``out_dir`` (default
    ``predictions/<source name>``) and return the summary. ``score_threshold``: keep
    detections at or above it (default: the model's own, which is what evaluate uses).
    Unreadable images and frames are skipped and listed."""
    detector = open_model(model, provider=provider, threads=threads)
    threshold = model_threshold(detector, score_threshold)
    items = open_source(source, max_frames=max_frames, max_pixels=max_pixels)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(items)
    with atomic_dir(out_dir) as tmp:
        visuals = _visual_sink(items, tmp) if save_visuals else None
        try:
            summary = _run(
                detector, items, tmp, threshold=threshold, visuals=visuals, progress=progress
            )
        finally:
            if visuals is not None:
                visuals.close()
        summary = {
            "model": str(detector.path),
            "provider": detector.provider,
            "out_dir": str(out_dir),
            **summary,
        }
        write_json(tmp / "summary.json", summary)
    return summary


def default_out_dir(items: Source) -> Path:
    """``predictions/<name>``: the image's stem, the folder's or video's name, ``camera0``,
    ``stream``; a glob's folder name plus ``-glob``."""
    name = items.name if items.kind == "video" else Path(items.name).name
    if items.kind == "images" and items.base is not None and glob.has_magic(items.name):
        name = f"{items.base.name or 'glob'}-glob"
    elif items.kind == "images" and len(items.paths) == 1 and items.base == items.paths[0].parent:
        name = items.paths[0].stem
    return Path("predictions") / (re.sub(r"[^\w.-]+", "_", name).strip("._") or "source")


def _run(detector, items: Source, tmp: Path, *, threshold, visuals, progress) -> dict:
    records = skipped = detections = 0
    latencies, skipped_items = [], []
    start = time.perf_counter()
    bar = tqdm(total=items.total, unit="img", disable=not progress, file=sys.stderr)
    with open(tmp / "predictions.jsonl", "w", encoding="utf-8") as lines:
        try:
            for item in items:
                bar.update(1)
                if item.error is not None:
                    skipped += 1
                    skipped_items.append(
                        {"source": item.source, "frame": item.frame, "reason": item.error}
                    )
                    bar.write(f"skipped: {item.error}", file=sys.stderr)
                    continue
                output, latency_ms = detect(detector, item.image, threshold)
                record = detection_record(item, output, detector.class_names, latency_ms)
                lines.write(json.dumps(record) + "\n")
                records += 1
                detections += len(record["detections"])
                latencies.append(latency_ms)
                if visuals is not None:
                    visuals.add(item, output, detector.class_names)
        except KeyboardInterrupt:  # a camera or stream runs until stopped: keep what ran
            bar.write("interrupted: writing what was processed", file=sys.stderr)
        finally:
            bar.close()
    wall_s = time.perf_counter() - start
    return {
        "source": items.name,
        "images": records,
        "skipped": skipped,
        "skipped_items": skipped_items,
        "detections": detections,
        "score_threshold": threshold,
        "mean_latency_ms": float(np.mean(latencies)) if latencies else 0.0,
        "fps": records / wall_s if wall_s > 0 else 0.0,
        **({"stream": dict(items.stats)} if items.live else {}),
    }


class _ImageSink:
    """Annotated copies under ``folder``, at each image's relative name."""

    def __init__(self, folder: Path):
        self.folder = folder

    def add(self, item: Item, output: dict, class_names: list[str]) -> None:
        path = self.folder / item.name
        if path.suffix.lower() not in SAVE_AS:
            path = path.with_name(path.name + ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_annotate(item.image, output, class_names)).save(
            path, format=SAVE_AS[path.suffix.lower()]
        )

    def close(self) -> None:
        pass


class _VideoSink:
    """An annotated ``.mp4`` (OpenCV, ``mp4v``), sized by the first frame."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self.writer = path, fps, None

    def add(self, item: Item, output: dict, class_names: list[str]) -> None:
        import cv2

        frame = _annotate(item.image, output, class_names)
        if self.writer is None:
            height, width = frame.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not self.writer.isOpened():
                raise DetflowError(f"{self.path}: OpenCV cannot write an mp4v video here")
        self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def _visual_sink(items: Source, tmp: Path):
    if items.kind == "images":
        return _ImageSink(tmp / "images")
    return _VideoSink(tmp / f"{items.name}.mp4", items.fps)


def _annotate(image: np.ndarray, output: dict, class_names: list[str]) -> np.ndarray:
    names = {index + 1: name for index, name in enumerate(class_names)}
    return draw_boxes(
        image,
        boxes=output["boxes"],
        labels=output["labels"],
        names=names,
        scores=output["scores"],
    )
