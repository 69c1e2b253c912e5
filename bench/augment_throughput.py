"""Benchmark: augment's throughput on all cores against a single-process loop.

On the same train split and the same albumentations transforms (conf/augment/<config>.yaml),
times, one after the other in one run:
  loop     - a plain single-process loop: load, transform, save PNG, per augmented copy
  detflow  - detflow.data.augment.augment_dataset with workers=0 (all cores), originals copied too
and prints images/s (augmented copies per second) and the ratio detflow/loop.

The train split is data/split/train.json when present (the bundled dataset after
`dvc repro`), else N generated images.

Usage: python bench/augment_throughput.py [--config heavy] [--copies 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from detflow.core.boxes import xywh_to_xyxy
from detflow.core.images import load_rgb
from detflow.data import manifest
from detflow.data.augment import (
    PNG_COMPRESS_LEVEL,
    AugmentOptions,
    augment_dataset,
    build_pipeline,
    item_seed,
)
from detflow.data.collect import CollectOptions, collect_dataset

REPO = Path(__file__).resolve().parents[1]


def _plain_loop(train_json: Path, out: Path, options: dict, copies: int) -> None:
    """The tutorial way: one process, one image after the other."""
    pipeline = build_pipeline(
        transforms=options["transforms"],
        min_visibility=options["min_visibility"],
        min_area=options["min_area"],
    )
    dataset = manifest.load_dataset(train_json)
    folder = manifest.image_dir(train_json, dataset)
    boxes_of = manifest.annotations_by_image(dataset)
    out.mkdir()
    for image in dataset["images"]:
        anns = boxes_of.get(image["id"], [])
        pixels = np.asarray(load_rgb(folder / image["file_name"]))
        for copy in range(1, copies + 1):
            pipeline.set_random_seed(item_seed(0, image["file_name"], copy))
            result = pipeline(
                image=pixels,
                bboxes=xywh_to_xyxy([a["bbox"] for a in anns]),
                labels=[a["category_id"] for a in anns],
            )
            Image.fromarray(result["image"]).save(
                out / f"{image['id']}_{copy}.png", compress_level=PNG_COMPRESS_LEVEL
            )


def _train_split(work: Path) -> Path:
    bundled = REPO / "data" / "split" / "train.json"
    if bundled.exists():
        return bundled
    source = {"format": "synthetic", "num_images": 200, "image_size": 416, "seed": 0}
    options = CollectOptions(source={**source, "classes": ["circle", "square"]})
    collect_dataset(options=options, out_dir=work / "raw")
    return work / "raw" / "dataset.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="heavy", help="conf/augment/<config>.yaml")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    options = yaml.safe_load((REPO / "conf" / "augment" / f"{args.config}.yaml").read_text())
    # the same copies of every image as the loop: no oversampling, all cores
    changes = {"copies": args.copies, "balance_ratio": None, "workers": 0}
    ours_options = AugmentOptions.from_config({**options, **changes}, seed=0)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        train_json = _train_split(work)
        count = len(manifest.load_dataset(train_json)["images"]) * args.copies
        origin = "data/split/train.json" if REPO in train_json.parents else "generated images"
        print(
            f"machine: {os.cpu_count()} cores; augment={args.config}, {count} augmented copies "
            f"({args.copies} per image) of {origin}"
        )
        print("| run | loop img/s | detflow img/s | detflow/loop |")
        print("|---|---|---|---|")
        for run in range(1, args.repeats + 1):
            start = time.perf_counter()
            _plain_loop(train_json, work / f"loop{run}", options, args.copies)
            loop = count / (time.perf_counter() - start)
            start = time.perf_counter()
            augment_dataset(
                train_json=train_json, out_dir=work / f"detflow{run}", options=ours_options
            )
            ours = count / (time.perf_counter() - start)
            print(f"| {run} | {loop:.1f} | {ours:.1f} | {ours / loop:.2f}x |")


if __name__ == "__main__":
    main()
