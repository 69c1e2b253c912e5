"""Tiny training data and settings shared by the training tests."""

from __future__ import annotations

from pathlib import Path

from detflow.data import manifest
from detflow.data.collect import CollectOptions, collect_dataset
from detflow.model.postprocess_config import PostprocessOptions

POSTPROCESS = PostprocessOptions(score_threshold=0.05, nms_iou=0.5, max_detections=100)
TINY_MODEL = {
    "name": "fasterrcnn_mobilenet_v2",
    "backbone_weights": "none",
    "trainable_backbone_layers": 3,
    "min_size": 64,
    "max_size": 64,
    "test_proposals": 50,
}
# Metrics that depend on the clock, not on what was computed.
TIMING_KEYS = {"train_images_per_s"}


def tiny_split(root: Path, *, images: int = 8, size: int = 64) -> Path:
    """``root/augmented/train.json``, ``root/split/val.json`` and ``root/split/test.json``
    (the stage's layout; test = the val images) over seeded synthetic images; returns ``root``."""
    source = {
        "format": "synthetic",
        "num_images": images,
        "image_size": size,
        "classes": ["circle", "square"],
        "seed": 1,
    }
    collect_dataset(options=CollectOptions(source=source), out_dir=root / "raw")
    dataset = manifest.load_dataset(root / "raw" / "dataset.json")
    ids = [im["id"] for im in dataset["images"]]
    for json_path, part in (
        (root / "augmented" / "train.json", ids[: images * 3 // 4]),
        (root / "split" / "val.json", ids[images * 3 // 4 :]),
        (root / "split" / "test.json", ids[images * 3 // 4 :]),
    ):
        manifest.save_dataset(
            manifest.subset(dataset, part), json_path, image_dir=root / "raw" / "images"
        )
    return root


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in history]


def plan_and_train(
    *,
    model_config: dict,
    postprocess: PostprocessOptions,
    train_json: Path,
    val_json: Path,
    out_dir: Path,
    options,
    config: dict | None = None,
    on_epoch_end=None,
    on_plan=None,
) -> dict:
    """What the train stage does: the plan from the splits, then training as it says
    (``on_plan(plan)`` sees the plan first)."""
    from detflow.train.loop import train_detector
    from detflow.train.plan import plan_training

    plan = plan_training(
        model_config=model_config,
        postprocess=postprocess,
        options=options,
        train_dataset=manifest.load_dataset(train_json),
        val_dataset=manifest.load_dataset(val_json),
    )
    if on_plan:
        on_plan(plan)
    return train_detector(
        plan=plan,
        train_json=train_json,
        val_json=val_json,
        out_dir=out_dir,
        config=config,
        on_epoch_end=on_epoch_end,
    )
