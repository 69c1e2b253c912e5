"""The bootstrap's cost: redoing COCO's pooling from cached per-image matches vs re-running
pycocotools' COCOeval (evaluate + accumulate) for every resample.

On a synthetic split the size of the bundled test split (33 images, 2 classes, ~1.5 boxes per
image, noisy detections), times ``--runs`` COCOeval runs and one ``bootstrap_ci`` of
``--resamples`` resamples, and prints the projected ratio. Also checks both give the same
mAP on the identity resample.

Usage: python bench/bootstrap_speed.py [--images 33] [--resamples 1000] [--runs 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from detflow.evaluate.bootstrap import accumulate, bootstrap_ci, match_table, summary
from detflow.evaluate.metrics import coco_evaluate, to_coco_results


def synthetic(images: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    gt, dets = {"images": [], "annotations": [], "categories": cats}, []
    for i in range(1, images + 1):
        gt["images"].append({"id": i, "width": 416, "height": 416, "group": f"g{i // 2}"})
        for _ in range(rng.integers(1, 3)):
            x, y, w, h = (*rng.uniform(0, 300, 2), *rng.uniform(20, 100, 2))
            label = int(rng.integers(1, 3))
            ann_id = len(gt["annotations"]) + 1
            gt["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": i,
                    "category_id": label,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            box = np.array([x, y, x + w, y + h]) + rng.normal(0, 8, 4)
            dets += to_coco_results(i, [box], [label], [rng.uniform(0.3, 1)])
        for _ in range(rng.integers(0, 6)):  # false detections, as a 0.05 threshold leaves
            x, y = rng.uniform(0, 350, 2)
            dets += to_coco_results(
                i, [[x, y, x + 40, y + 40]], [int(rng.integers(1, 3))], [rng.uniform(0.05, 0.6)]
            )
    return gt, dets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=33)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    gt, dets = synthetic(args.images)
    start = time.perf_counter()
    for _ in range(args.runs):
        reference, _ = coco_evaluate(gt, dets)
    coco_s = (time.perf_counter() - start) / args.runs
    table = match_table(gt, dets)
    ours = summary(accumulate(table, np.ones(len(table.groups), dtype=int)), table.classes)
    assert abs(ours["map50_95"] - reference["map50_95"]) < 1e-12
    start = time.perf_counter()
    bootstrap_ci(gt, dets, resamples=args.resamples, seed=0)
    ours_s = time.perf_counter() - start
    print(f"{len(dets)} detections on {args.images} images")
    print(f"COCOeval (evaluate + accumulate): {coco_s * 1000:.1f} ms per run")
    print(f"bootstrap_ci, {args.resamples} resamples: {ours_s:.2f} s")
    print(f"COCOeval × {args.resamples}: {coco_s * args.resamples:.1f} s (projected)")
    print(f"ratio: {coco_s * args.resamples / ours_s:.1f}× faster")


if __name__ == "__main__":
    main()
