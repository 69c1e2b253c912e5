"""Reference distributions for drift monitoring, and the population stability index.

The optimize stage runs the deployed model over the train and val images and stores, next
to the model card, ``reference.json``: for each signal — input ``width``, ``height`` and
``brightness`` (mean of the grey image, 0..255), ``detections`` per image and ``score`` of
each detection — bins closed on both sides with the share of the reference in each
(:func:`bin_edges`), and the ``classes`` mix (share of detections per class). ``detflow
serve`` measures the same over a sliding window and compares with :func:`psi` (population
stability index: < 0.1 stable, 0.1–0.25 moderate, > 0.25 a real shift). NumPy only.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from detflow.core.files import write_json
from detflow.core.images import load_rgb
from detflow.deploy.onnx_detector import OnnxDetector
from detflow.deploy.runtime import detect, model_threshold

NUMERIC_SIGNALS = ("width", "height", "brightness", "detections", "score")
BINS = 10
EPSILON = 1e-4  # empty bins: PSI stays finite
CONSTANT_HALF_WIDTH = 0.05  # a constant signal's bin: value ± 5 % (at least ± 0.5)


def image_signals(image: np.ndarray, output: dict) -> dict:
    """The signals of one ``[H, W, 3]`` uint8 RGB image and its detections (after the score
    threshold): ``width``, ``height``, ``brightness``, ``detections`` (numbers), ``score``
    and ``labels`` (one per detection)."""
    height, width = image.shape[:2]
    grey = image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114
    return {
        "width": float(width),
        "height": float(height),
        "brightness": float(grey.mean()),
        "detections": float(len(output["scores"])),
        "score": [float(s) for s in output["scores"]],
        "labels": [int(v) for v in output["labels"]],
    }


def values_of(signals: Iterable[dict], name: str) -> np.ndarray:
    """One signal's values over images (``score``: every detection's)."""
    if name == "score":
        return np.array([s for item in signals for s in item["score"]], float)
    return np.array([item[name] for item in signals], float)


def build_reference(signals: list[dict], class_names: list[str]) -> dict:
    """``{"images": n, "signals": {name: {"edges", "shares"}}, "classes": {name: share}}``."""
    reference = {"images": len(signals), "signals": {}, "classes": {}}
    for name in NUMERIC_SIGNALS:
        values = values_of(signals, name)
        if len(values) == 0:
            continue
        edges = bin_edges(values)
        reference["signals"][name] = {
            "edges": [float(e) for e in edges],
            "shares": [float(s) for s in shares(values, edges)],
        }
    labels = [label for item in signals for label in item["labels"]]
    reference["classes"] = class_shares(labels, class_names)
    return reference


def bin_edges(values: np.ndarray) -> np.ndarray:
    """Edges of the reference bins of ``values`` (non-empty), closed on both sides: the
    reference's range widened by its own width on each side, cut at its deciles; a constant
    value ``v`` gets the one bin ``v ± max(5 % of |v|, 0.5)``. :func:`shares` adds a bin
    below the first edge and one from the last edge on, both empty in the reference: values
    outside its range move the PSI."""
    low, high = float(values.min()), float(values.max())
    if low == high:
        margin = max(abs(low) * CONSTANT_HALF_WIDTH, 0.5)
        return np.array([low - margin, high + margin])
    # a tenth of the range as margin: same-distribution PSI 0.38 (median) instead of 0.23
    # with 34 reference images (its tails fall outside more often); the whole range: 0.25
    margin = high - low
    inner = np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1])
    return np.unique([low - margin, *inner, high + margin])


def shares(values: np.ndarray, edges) -> np.ndarray:
    """The share of ``values`` in each bin: ``(-inf, e0), [e0, e1), … [e_last, inf)``."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def class_shares(labels: list[int], class_names: list[str]) -> dict[str, float]:
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names) + 1)[1:]
    total = max(int(counts.sum()), 1)
    return {name: float(count / total) for name, count in zip(class_names, counts, strict=False)}


def psi(reference: Iterable[float], current: Iterable[float]) -> float:
    """Population stability index of two share vectors over the same bins."""
    ref = np.clip(np.asarray(list(reference), float), EPSILON, None)
    cur = np.clip(np.asarray(list(current), float), EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def write_reference(
    *, detector: OnnxDetector, image_paths: list[Path], out_path: str | Path
) -> dict:
    """Run ``detector`` (its own score threshold) over ``image_paths``; write and return the
    reference distributions."""
    threshold = model_threshold(detector, None)
    signals = []
    for path in image_paths:
        image = np.asarray(load_rgb(path))
        output, _ = detect(detector, image, threshold)
        signals.append(image_signals(image, output))
    reference = build_reference(signals, detector.class_names)
    write_json(out_path, reference)
    return reference
