"""The dataset table: the default pipeline (collect → evaluate) on datasets of different
character, with no overrides beyond the dataset (and the seed, and any given here).

Datasets: ``thermal`` (bundled: one or two large objects per image), ``raccoon``
(``../shared/datasets/raccoon``, Pascal VOC: one class, 1-3 medium-to-large objects) and
``dense`` (generated here, Pascal VOC: many small objects of 3 classes per image, touching
and overlapping, sizes spread 12-64 px, on cluttered backgrounds). Each runs collect → augment
once, then train and evaluate once per ``train.seed`` (as ``dvc exp run -S train.seed=…``
would: same data and split, another training seed), every ``paths.*`` under a work folder,
then prints a markdown row: dataset, images, boxes per image, best possible recall, the auto
choices, test mAP50 per seed and their mean ± sd, minutes (all seeds, data preparation
included).

Usage: python bench/dataset_table.py [--datasets thermal raccoon dense] [--seeds 0 1 2]
       [--dense-images 200] [--work DIR] [OVERRIDE ...]   (e.g. train.epochs=3 for a quick run)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from detflow.core.boxes import box_iou

REPO = Path(__file__).resolve().parents[1]
STAGES = ("collect", "clean", "split", "augment", "train", "evaluate")
RACCOON = REPO.parent / "shared" / "datasets" / "raccoon"
DENSE_CLASSES = ("disc", "box", "triangle")


def generate_dense(root: Path, *, images: int, size: int = 416, seed: int = 0) -> Path:
    """``images`` cluttered ``size``² JPEGs with 15-45 objects each (3 classes, 12-64 px,
    touching or overlapping up to IoU 0.3), one VOC XML each; returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for index in range(images):
        base = rng.normal(110, 35, (size // 8, size // 8, 3)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(base).resize((size, size), Image.BILINEAR)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(20, 60)):  # clutter: lines and specks
            x, y = rng.integers(0, size, 2)
            dx, dy = rng.integers(-40, 40, 2)
            draw.line([int(x), int(y), int(x + dx), int(y + dy)], fill=_color(rng), width=2)
        boxes: list[tuple] = []
        target = int(rng.integers(15, 46))
        for _ in range(target * 4):
            if len(boxes) >= target:
                break
            side = float(np.exp(rng.uniform(np.log(12), np.log(64))))
            w, h = side * rng.uniform(0.7, 1.4), side * rng.uniform(0.7, 1.4)
            x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
            box = (x0, y0, x0 + w, y0 + h)
            if any(box_iou([box], [other[:4]])[0, 0] > 0.3 for other in boxes):
                continue
            label = int(rng.integers(0, len(DENSE_CLASSES)))
            _draw(draw, DENSE_CLASSES[label], box, _color(rng, bright=True))
            boxes.append((*box, label))
        name = f"dense_{index:04d}"
        image.save(root / "images" / f"{name}.jpg", quality=92)
        (root / "annotations" / f"{name}.xml").write_text(_voc(name, size, boxes))
    return root


def _color(rng, bright=False):
    low = 150 if bright else 40
    return tuple(int(v) for v in rng.integers(low, low + 100, 3))


def _draw(draw, kind, box, color):
    x0, y0, x1, y1 = box
    if kind == "disc":
        draw.ellipse(box, fill=color, outline=(20, 20, 20))
    elif kind == "box":
        draw.rectangle(box, fill=color, outline=(20, 20, 20))
    else:
        draw.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], fill=color, outline=(20, 20, 20))


def _voc(name: str, size: int, boxes) -> str:
    objects = "".join(
        f"<object><name>{DENSE_CLASSES[c]}</name><bndbox><xmin>{x0:.1f}</xmin>"
        f"<ymin>{y0:.1f}</ymin><xmax>{x1:.1f}</xmax><ymax>{y1:.1f}</ymax></bndbox></object>"
        for x0, y0, x1, y1, c in boxes
    )
    return (
        f"<annotation><filename>{name}.jpg</filename><size><width>{size}</width>"
        f"<height>{size}</height><depth>3</depth></size>{objects}</annotation>\n"
    )


def run_stages(stages, dataset: list[str], work: Path, overrides: list[str]) -> None:
    """The stage scripts ``stages`` in order, every path under ``work``."""
    paths = [
        f"paths.{key}={work / key}"
        for key in ("raw", "clean", "split", "augmented", "tiles", "train", "reports")
    ]
    for stage in stages:
        args = [*dataset, *paths, *overrides, f"hydra.run.dir={work}/hydra"]
        subprocess.run(
            [sys.executable, str(REPO / "stages" / f"{stage}.py"), *args], check=True, cwd=REPO
        )


def run_seed(dataset: list[str], work: Path, seed: int, overrides: list[str]) -> dict:
    """train and evaluate with ``train.seed=seed`` on the data prepared in ``work``, into
    ``work/seed<seed>``; the evaluate and train reports."""
    out = work / f"seed{seed}"
    for key in ("raw", "clean", "split", "augmented"):
        link = out / key
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(work / key)
    run_stages(("train", "evaluate"), dataset, out, [f"train.seed={seed}", *overrides])
    reports = out / "reports"
    return {
        "evaluate": json.loads((reports / "evaluate" / "metrics.json").read_text()),
        "plan": json.loads((reports / "train" / "plan.json").read_text()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["thermal", "raccoon", "dense"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--dense-images", type=int, default=200)
    parser.add_argument("--work", type=Path, help="keep everything here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        sources = {
            "thermal": [],
            "raccoon": ["data=voc", f"data.path={RACCOON}"],
            "dense": ["data=voc", f"data.path={work / 'dense_source'}"],
        }
        if "dense" in args.datasets:
            generate_dense(work / "dense_source", images=args.dense_images)
        print(f"seeds {args.seeds}; overrides {args.overrides or 'none'}")
        print(
            "| dataset | train images | boxes/image | BPR | auto | test mAP50 per seed | "
            "mean ± sd | minutes |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name in args.datasets:
            scores, start = [], time.perf_counter()
            run_stages(STAGES[:4], sources[name], work / name, args.overrides)
            for seed in args.seeds:
                result = run_seed(sources[name], work / name, seed, args.overrides)
                scores.append(result["evaluate"]["map50"])
                print(f"{name} train.seed={seed}: test mAP50 {scores[-1]:.4f}", flush=True)
            plan, minutes = result["plan"], (time.perf_counter() - start) / 60
            check = plan["data_check"]
            sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
            auto = ", ".join(f"{k.split('.')[-1]} {c['value']}" for k, c in plan["choices"].items())
            print(
                f"| {name} | {check['data']['images']} | "
                f"{check['data']['boxes_per_image']['mean']:.1f} | "
                f"{check['best_possible_recall']:.3f} | {auto} | "
                f"{' / '.join(f'{s:.3f}' for s in scores)} | "
                f"{statistics.mean(scores):.3f} ± {sd:.3f} | {minutes:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
