"""Tiles off against auto (issue 37), side by side in one run: test mAP50 per seed and mean,
PyTorch latency per full image (evaluate's p50, sliced where tiled) and tiles per image.

Datasets: ``large`` (generated here: 1600×1200 to 4000×3000 JPEGs with 20-80 objects of
8-40 px each, 2 classes, on textured backgrounds), ``thermal`` (bundled), ``raccoon``
(``../shared/datasets/raccoon``), ``dense`` (bench/dataset_table.py's generated dense set),
or a YOLO/VOC folder given as ``name=FORMAT:PATH`` (e.g. a public aerial set fetched
yourself). Each runs collect → augment once, then train and evaluate per ``model.tiles``
and ``train.seed`` (the default pipeline otherwise), every ``paths.*`` under a work folder.

Usage: python bench/tiles.py [--datasets large thermal raccoon dense NAME=voc:/path]
       [--seeds 0 1 2] [--modes off auto] [--large-images 40] [--work DIR] [OVERRIDE ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("car", "person")


def _dataset_table():
    spec = importlib.util.spec_from_file_location("dataset_table", REPO / "bench/dataset_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate_large(root: Path, *, images: int, seed: int = 0) -> Path:
    """``images`` large JPEGs (1600×1200 to 4000×3000) with 20-80 objects of 8-40 px each
    (cars: bright rectangles, persons: dark discs) on a noisy textured ground; one VOC XML
    each; returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for index in range(images):
        width, height = int(rng.integers(1600, 4001)), int(rng.integers(1200, 3001))
        ground = rng.normal(105, 30, (height // 16, width // 16, 3)).clip(0, 255)
        image = Image.fromarray(ground.astype(np.uint8)).resize((width, height), Image.BILINEAR)
        draw = ImageDraw.Draw(image)
        boxes = []
        for _ in range(int(rng.integers(20, 81))):
            side = float(rng.uniform(8, 40))
            label = int(rng.integers(0, len(CLASSES)))
            w, h = (side, side * rng.uniform(0.5, 0.9)) if label == 0 else (side * 0.8, side)
            x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            box = (x0, y0, x0 + w, y0 + h)
            if label == 0:
                draw.rectangle(box, fill=tuple(int(v) for v in rng.integers(170, 250, 3)))
            else:
                draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(10, 60, 3)))
            boxes.append((*box, label))
        name = f"large_{index:04d}"
        image.save(root / "images" / f"{name}.jpg", quality=90)
        (root / "annotations" / f"{name}.xml").write_text(_voc(name, width, height, boxes))
    return root


def _voc(name: str, width: int, height: int, boxes) -> str:
    objects = "".join(
        f"<object><name>{CLASSES[c]}</name><bndbox><xmin>{x0:.1f}</xmin><ymin>{y0:.1f}</ymin>"
        f"<xmax>{x1:.1f}</xmax><ymax>{y1:.1f}</ymax></bndbox></object>"
        for x0, y0, x1, y1, c in boxes
    )
    return (
        f"<annotation><filename>{name}.jpg</filename><size><width>{width}</width>"
        f"<height>{height}</height><depth>3</depth></size>{objects}</annotation>\n"
    )


def _sources(names: list[str], work: Path, large_images: int, table) -> dict[str, list[str]]:
    sources = {}
    for name in names:
        if "=" in name:
            label, spec = name.split("=", 1)
            fmt, path = spec.split(":", 1)
            sources[label] = [f"data={fmt}", f"data.path={path}"]
        elif name == "large":
            generate_large(work / "large_source", images=large_images)
            sources[name] = ["data=voc", f"data.path={work / 'large_source'}"]
        elif name == "dense":
            table.generate_dense(work / "dense_source", images=200)
            sources[name] = ["data=voc", f"data.path={work / 'dense_source'}"]
        elif name == "raccoon":
            sources[name] = ["data=voc", f"data.path={table.RACCOON}"]
        else:
            sources[name] = []
    return sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["large", "thermal", "raccoon"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=["off", "auto"])
    parser.add_argument("--large-images", type=int, default=40)
    parser.add_argument("--work", type=Path, help="keep everything here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    table = _dataset_table()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        sources = _sources(args.datasets, work, args.large_images, table)
        print(f"seeds {args.seeds}; overrides {args.overrides or 'none'}")
        print("| dataset | model.tiles | chosen | tiles per train image | test mAP50 per seed "
              "| mean ± sd | ms per full image (p50) | minutes |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for name, dataset in sources.items():
            base = work / name
            table.run_stages(table.STAGES[:4], dataset, base, args.overrides)
            for mode in args.modes:
                _row(table, name, dataset, base, mode, args)


def _row(table, name, dataset, base, mode, args) -> None:
    scores, latency, start = [], [], time.perf_counter()
    for seed in args.seeds:
        result = table.run_seed(dataset, base, seed, [f"model.tiles={mode}", *args.overrides])
        scores.append(result["evaluate"]["map50"])
        latency.append(result["evaluate"]["latency_ms_p50"])
        plan = result["plan"]
    tiles = plan.get("tiles")
    per_image = f"{tiles['counts']['tiles'] / tiles['counts']['images_in']:.1f}" if tiles else "1"
    chosen = plan["choices"].get("model.tiles", {}).get("value", "off")
    sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
    print(
        f"| {name} | {mode} | {chosen} | {per_image} | "
        f"{' / '.join(f'{s:.3f}' for s in scores)} | {statistics.mean(scores):.3f} ± {sd:.3f} "
        f"| {statistics.median(latency):.1f} | {(time.perf_counter() - start) / 60:.1f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
