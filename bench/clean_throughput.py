"""Benchmark: clean's throughput against merely decoding every image once.

Generates N synthetic images (seeded shapes on textured backgrounds, PNG) into a canonical
dataset with `collect`, then times, in one process on the same files:
  decode  - PIL open + full decode of every image (the floor any cleaning must pay)
  clean   - detflow.data.clean.clean_dataset with the default policy
and prints the ratio clean/decode for each N, plus the scaling from the smallest N.

Usage: python bench/clean_throughput.py [--sizes 1000 10000] [--image-size 128]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from detflow.data import manifest
from detflow.data.clean import clean_dataset
from detflow.data.collect import CollectOptions, collect_dataset


def _decode_all(dataset_json: Path) -> float:
    dataset = manifest.load_dataset(dataset_json)
    folder = manifest.image_dir(dataset_json, dataset)
    start = time.perf_counter()
    for image in dataset["images"]:
        with Image.open(folder / image["file_name"]) as opened:
            opened.load()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; images {args.image_size}x{args.image_size} PNG")
    print("| images | decode s | clean s | clean/decode | clean img/s |")
    print("|---|---|---|---|---|")
    first = None
    for count in args.sizes:
        with tempfile.TemporaryDirectory() as work:
            work = Path(work)
            source = {
                "format": "synthetic",
                "num_images": count,
                "image_size": args.image_size,
                "classes": ["circle", "square", "triangle"],
                "seed": 0,
            }
            collect_dataset(options=CollectOptions(source=source), out_dir=work / "raw")
            raw = work / "raw" / "dataset.json"
            _decode_all(raw)  # warm the page cache: both timings read from memory
            decode = _decode_all(raw)
            start = time.perf_counter()
            clean_dataset(in_json=raw, out_dir=work / "clean")
            clean = time.perf_counter() - start
        first = first or (count, clean)
        print(
            f"| {count} | {decode:.2f} | {clean:.2f} | {clean / decode:.2f}x "
            f"| {count / clean:.0f} |"
        )
    if len(args.sizes) > 1:
        n0, t0 = first
        print(f"scaling: {args.sizes[-1] / n0:.0f}x the images took {clean / t0:.2f}x the time")


if __name__ == "__main__":
    main()
