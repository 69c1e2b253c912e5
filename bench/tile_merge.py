"""How sliced inference should merge tiles (issue 37): class-aware NMS against weighted box
fusion, overlap on IOS or IoU, with and without the whole image as one more view, on a model
trained on tiles. Side by side in one run, same checkpoint, same images.

For each run folder (``bench/tiles.py --work DIR`` leaves ``DIR/<dataset>/seed<k>/`` with
``train/best.pt`` and ``split/``): the checkpoint's tile size and overlap, every merge
variant, COCO mAP50 / mAP50-95 on **val** (what decides: the test split only reports) and on
test. The model runs once per tile (its detections are cached by the tile's bytes): the
variants differ only in the merge and in the whole-image view, so they see the same tile
detections. The row the checkpoint was trained with is marked.

Usage: python bench/tile_merge.py RUN_DIR [RUN_DIR ...] [--splits val test]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from pathlib import Path

import torch
import yaml

from detflow.core.slicing import tiled_predict
from detflow.core.tile_settings import TileSettings
from detflow.data.torch_dataset import DetectionDataset
from detflow.evaluate.inference import tensor_to_rgb, torch_predict_batch
from detflow.evaluate.metrics import evaluate_predictor
from detflow.model.checkpoint_file import resolve_postprocess, stored_tiles
from detflow.model.postprocess_config import PostprocessOptions
from detflow.model.restore import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
VARIANTS = (
    {"merge": "nms", "metric": "ios", "with_full_image": False},
    {"merge": "nms", "metric": "iou", "with_full_image": False},
    {"merge": "wbf", "metric": "ios", "with_full_image": False},
    {"merge": "wbf", "metric": "iou", "with_full_image": False},
    {"merge": "nms", "metric": "ios", "with_full_image": True},
    {"merge": "wbf", "metric": "ios", "with_full_image": True},
)


def variants(trained: TileSettings) -> list[TileSettings]:
    """The trained settings with each merge of :data:`VARIANTS` (size and overlap kept)."""
    return [dataclasses.replace(trained, **v) for v in VARIANTS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| run | tiles | merge | overlap | whole image | " + " | ".join(
        f"{s} mAP50 | {s} mAP50-95" for s in args.splits) + " |")  # fmt: skip
    print("|---|---|---|---|---|" + "---|---|" * len(args.splits))
    for run in args.runs:
        _run_rows(run, args.splits)


def _run_rows(run: Path, splits: list[str]) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())["postprocess"]
    postprocess = PostprocessOptions.from_config(params)  # the pipeline's, as evaluate runs
    model, state = load_checkpoint(run / "train" / "best.pt", postprocess=postprocess)
    postprocess = resolve_postprocess(postprocess, state)
    trained = stored_tiles(state)
    if trained is None:
        print(f"| {run} | none: trained on whole images, nothing to merge |")
        return
    data = {s: DetectionDataset(run / "split" / f"{s}.json") for s in splits}
    predict_batch = cached(torch_predict_batch(model, postprocess=postprocess))
    for tiles in variants(trained):
        cells = []
        for split in splits:
            predict_one = merged_predictor(predict_batch, tiles, postprocess.max_detections)
            metrics = evaluate_predictor(predict_one, data[split])
            cells += [f"{metrics['map50']:.4f}", f"{metrics['map50_95']:.4f}"]
        mark = " (trained)" if tiles == trained else ""
        print(
            f"| {run.parent.name}/{run.name} | {tiles.size}/{tiles.overlap} | "
            f"{tiles.merge}{mark} | {tiles.metric} {tiles.iou} | {tiles.with_full_image} | "
            f"{' | '.join(cells)} |",
            flush=True,
        )


def cached(predict_batch):
    """``predict_batch`` remembering each tile's detections by the tile's bytes."""
    memory: dict[bytes, dict] = {}

    def predict(tiles: list) -> list[dict]:
        keys = [hashlib.sha1(t.tobytes() + str(t.shape).encode()).digest() for t in tiles]
        missing = [i for i, k in enumerate(keys) if k not in memory]
        if missing:
            for i, out in zip(missing, predict_batch([tiles[i] for i in missing]), strict=True):
                memory[keys[i]] = out
        return [memory[k] for k in keys]

    return predict


def merged_predictor(predict_batch, tiles: TileSettings, max_detections: int):
    """``[3, H, W]`` tensor → the merged detections of its tiles under ``tiles``."""

    def predict_one(image) -> dict:
        out = tiled_predict(
            tensor_to_rgb(image), predict_batch, tiles=tiles, max_detections=max_detections
        )
        return {key: out[key] for key in ("boxes", "labels", "scores")}

    return predict_one


if __name__ == "__main__":
    main()
