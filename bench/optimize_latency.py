"""Benchmark: PyTorch eager vs the optimized ONNX variants, side by side in one process.

Runs the trained checkpoint (``models/train/best.pt``, PyTorch eager, post-processing as the
evaluate stage applies it) and each ``models/optimized/<variant>.onnx`` (ONNX Runtime, CPU)
on the same test images, batch 1, all on the same threads. Rounds alternate the order of the
runners so neither always runs on a warmer cache. Prints each runner's median latency per
image (p50 over images, median over rounds), its speed-up over PyTorch and over ``ort_fp32``,
and mAP50-95 (accuracy does not depend on the round). Needs a finished ``dvc repro``.

Usage: python bench/optimize_latency.py [--variants ort_fp32 int8_static int8_dynamic]
       [--rounds 3] [--images 0] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from detflow.data.torch_dataset import DetectionDataset
from detflow.deploy.onnx_detector import OnnxDetector
from detflow.evaluate.inference import detect_images
from detflow.evaluate.metrics import evaluate_predictor
from detflow.model.checkpoint_file import stored_postprocess
from detflow.model.restore import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def runners(checkpoint: Path, variant_dir: Path, variants: list[str], threads: int) -> dict:
    model, state = load_checkpoint(checkpoint)
    postprocess = stored_postprocess(state)

    def pytorch(image: torch.Tensor) -> dict:
        out = detect_images(model, [image], postprocess=postprocess)[0]
        return {k: v.numpy() for k, v in out.items()}

    found = {"pytorch": pytorch}
    for name in variants:
        path = variant_dir / f"{name}.onnx"
        if not path.exists():
            print(f"{name}: {path} missing, left out")
            continue
        detector = OnnxDetector(path, threads=threads)
        found[name] = lambda image, d=detector: d(image.numpy())
    return found


def timed(run, images: list[torch.Tensor]) -> float:
    """p50 ms per image over ``images`` (one warm-up call first)."""
    run(images[0])
    seconds = []
    for image in images:
        start = time.perf_counter()
        run(image)
        seconds.append(time.perf_counter() - start)
    return float(np.percentile(seconds, 50) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO / "models/train/best.pt")
    parser.add_argument("--variant-dir", type=Path, default=REPO / "models/optimized")
    parser.add_argument("--test", type=Path, default=REPO / "data/split/test.json")
    parser.add_argument(
        "--variants", nargs="+", default=["ort_fp32", "int8_static", "int8_dynamic"]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument("--threads", type=int, default=0, help="0: all cores")
    args = parser.parse_args()
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    dataset = DetectionDataset(args.test)
    count = args.images or len(dataset)
    images = [dataset[i][0] for i in range(min(count, len(dataset)))]
    found = runners(args.checkpoint, args.variant_dir, args.variants, threads)
    print(
        f"machine: {os.cpu_count()} cores, threads {threads}; {len(images)} test images, "
        f"batch 1; torch {torch.__version__}"
    )
    p50s = {name: [] for name in found}
    for round_index in range(args.rounds):
        order = list(found) if round_index % 2 == 0 else list(reversed(found))
        for name in order:
            p50s[name].append(timed(found[name], images))
        print(f"round {round_index + 1}: " + ", ".join(f"{n} {p50s[n][-1]:.1f} ms" for n in found))
    medians = {name: statistics.median(values) for name, values in p50s.items()}
    print("| runner | p50 ms (median of rounds) | × PyTorch | × ort_fp32 | mAP50-95 |")
    print("|---|---|---|---|---|")
    for name, run in found.items():
        metrics = evaluate_predictor(run, dataset)
        vs_ort = medians["ort_fp32"] / medians[name] if "ort_fp32" in medians else float("nan")
        print(
            f"| {name} | {medians[name]:.1f} | {medians['pytorch'] / medians[name]:.2f} | "
            f"{vs_ort:.2f} | {metrics['map50_95']:.4f} |"
        )


if __name__ == "__main__":
    main()
