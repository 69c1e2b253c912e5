"""Benchmark: throughput at batch 1 vs batch 8, for any deploy model, side by side in one run.

For each model given (default: the deployed one, ``models/deploy``, and ``ort_fp32`` from
``models/optimized``), on the test split's images, in interleaved rounds:

- batch 1: ``detector(image)`` for each image, one after another (what a single-image
  client gets);
- batch 8: ``detector.detect_batch(images[i:i + 8])`` (what ``detflow serve`` runs when 8
  requests wait): ONNX Runtime runs the graph with a batch axis in one call
  (:mod:`detflow.deploy.batch_graph`), OpenVINO runs the images on its parallel inference
  streams (throughput mode).

Prints images per second (median over rounds) and the batch-8 / batch-1 ratio, and checks
that each image's detections are the same either way (max score difference). Imports no
torch: only what a deploy machine has.

Usage: python bench/batch_throughput.py [--models models/deploy models/optimized/ort_fp32.onnx]
       [--split data/split/test.json] [--images 32] [--rounds 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from detflow.core.files import read_json
from detflow.core.images import load_rgb
from detflow.data import manifest
from detflow.deploy.runtime import image_input, open_model

REPO = Path(__file__).resolve().parents[1]
BATCH = 8


def test_images(split: Path, count: int) -> list[np.ndarray]:
    """The split's first ``count`` images (file order), as ``[3, H, W]`` float32 0..1."""
    data = manifest.load_dataset(split)
    folder = manifest.image_dir(split, data)
    names = sorted(image["file_name"] for image in data["images"])[:count]
    return [image_input(np.asarray(load_rgb(folder / name))) for name in names]


def label(path: Path) -> str:
    """``path``, with the deployed variant for a deploy folder (its ``model_card.json``)."""
    card = path / "model_card.json"
    return f"{path} ({read_json(card)['variant']})" if card.is_file() else str(path)


def one_by_one(detector, images: list[np.ndarray]) -> list[dict]:
    return [detector(image) for image in images]


def in_batches(detector, images: list[np.ndarray]) -> list[dict]:
    outputs = []
    for start in range(0, len(images), BATCH):
        outputs.extend(detector.detect_batch(images[start : start + BATCH]))
    return outputs


def images_per_second(run, detector, images: list[np.ndarray]) -> float:
    start = time.perf_counter()
    run(detector, images)
    return len(images) / (time.perf_counter() - start)


def max_score_difference(a: list[dict], b: list[dict]) -> float:
    """Largest score difference between the same image's detections (inf: counts differ)."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if x["scores"].shape != y["scores"].shape:
            return float("inf")
        if x["scores"].size:
            worst = max(worst, float(np.abs(x["scores"] - y["scores"]).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", type=Path,
        default=[REPO / "models/deploy", REPO / "models/optimized/ort_fp32.onnx"],
    )  # fmt: skip
    parser.add_argument("--split", type=Path, default=REPO / "data/split/test.json")
    parser.add_argument("--images", type=int, default=32, help="a multiple of 8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    args = parser.parse_args()
    if args.images <= 0 or args.images % BATCH:
        parser.error(f"--images={args.images}: use a positive multiple of {BATCH}")
    images = test_images(args.split, args.images)
    if len(images) < args.images:
        parser.error(f"--images={args.images}: {args.split} has {len(images)} images")
    detectors = {label(path): open_model(path, threads=args.threads) for path in args.models}
    print(f"{os.cpu_count()} cores; {len(images)} test images; {args.rounds} rounds")
    modes = {"batch 1": one_by_one, f"batch {BATCH}": in_batches}
    same = {}
    for name, detector in detectors.items():  # warm-up, and the same detections either way
        same[name] = max_score_difference(*(run(detector, images) for run in modes.values()))
    rates = {(name, mode): [] for name in detectors for mode in modes}
    for round_index in range(args.rounds):
        order = list(detectors.items())
        for name, detector in order if round_index % 2 == 0 else order[::-1]:
            for mode, run in modes.items():
                rates[name, mode].append(images_per_second(run, detector, images))
    print("| model | runtime | batch 1 img/s | batch 8 img/s | batch 8 / batch 1 | max Δscore |")
    print("|---|---|---|---|---|---|")
    for name, detector in detectors.items():
        one, eight = (statistics.median(rates[name, mode]) for mode in modes)
        print(
            f"| {name} | {detector.provider} | {one:.1f} | {eight:.1f} | {eight / one:.2f}× "
            f"| {same[name]:.1e} |"
        )


if __name__ == "__main__":
    main()
