"""The training plan (detflow.train.plan): every auto decided before anything is built, one
record of it, and a model built once per training process."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections import Counter

import numpy as np
import pytest
import torch

import detflow.model.build as build
from detflow.core.errors import ConfigError
from detflow.data import manifest
from detflow.data.torch_dataset import DetectionDataset, batches_per_epoch, train_loader
from detflow.model.build import build_model, build_skeleton
from detflow.model.checkpoint_file import read_checkpoint
from detflow.model.postprocess_config import PostprocessOptions
from detflow.train.data_check import AnchorGrid, input_size
from detflow.train.options import TrainOptions
from detflow.train.plan import cut_training_tiles, plan_training

from conftest import REPO, run
from train_helpers import TINY_MODEL, plan_and_train, tiny_split

AUTO_POSTPROCESS = PostprocessOptions(score_threshold=0.05, nms_iou=0.5, max_detections="auto")
AUTO_MODEL = {
    **TINY_MODEL,
    "name": "auto",
    **{k: "auto" for k in ("anchor_sizes", "anchor_aspect_ratios", "rois_per_image")},
}
OPTIONS = TrainOptions(epochs="auto", batch_size=2, warmup_steps="auto", threads=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_split(tmp_path_factory.mktemp("plan"))


def _plan(data, model=AUTO_MODEL, options=OPTIONS):
    return plan_training(
        model_config=model,
        postprocess=AUTO_POSTPROCESS,
        options=options,
        train_dataset=manifest.load_dataset(data / "augmented" / "train.json"),
        val_dataset=manifest.load_dataset(data / "split" / "val.json"),
    )


def test_the_plan_resolves_every_auto_with_a_reason_and_is_frozen(data):
    plan = _plan(data)
    assert list(plan.choices) == [
        "model.name",
        "postprocess.max_detections",
        "train.epochs",
        "train.warmup_steps",
    ]
    assert all(choice["reason"] for choice in plan.choices.values())
    assert plan.model["name"] == "fcos_mobilenet_v2" and plan.options.epochs == 40
    assert plan.options.warmup_steps == 3  # 6 train images, batch 2: 3 steps an epoch
    assert "auto" not in plan.model.values() and plan.postprocess.max_detections == 100
    json.dumps(plan.to_dict())  # JSON-ready: no tensor, module or optimizer state in it
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.model = {}
    with pytest.raises(TypeError):
        plan.choices["model.name"] = {}
    assert plan.metrics()["auto"] == {
        "name": "fcos_mobilenet_v2",
        "max_detections": 100,
        "epochs": 40,
        "warmup_steps": 3,
    }
    lines = plan.lines()
    assert lines[0].startswith("data check: 6 train images")
    assert lines[1].startswith("auto: model.name=fcos_mobilenet_v2 (best possible recall")


def test_budgets_read_val_never_test(data, tmp_path):
    """The densest val image sizes ``max_detections``; no test split is an input at all."""
    val = manifest.load_dataset(data / "split" / "val.json")
    image = val["images"][0]["id"]
    for _ in range(130):
        manifest.add_box(val, image_id=image, category_id=1, xywh=[1, 1, 20, 20])
    plan = plan_training(
        model_config=AUTO_MODEL,
        postprocess=AUTO_POSTPROCESS,
        options=OPTIONS,
        train_dataset=manifest.load_dataset(data / "augmented" / "train.json"),
        val_dataset=val,
    )
    choice = plan.choices["postprocess.max_detections"]
    assert choice["value"] > 130 and "train or val image" in choice["reason"]


def test_build_model_runs_once_per_training_process(data, tmp_path, monkeypatch):
    """``model.name: auto`` compares two candidates; neither is built: one model is, after
    the plan. Every module's reference to ``build_model`` is counted."""
    calls = []

    def counted(**kwargs):
        calls.append(kwargs["name"])
        return build_model(**kwargs)

    for module in list(sys.modules.values()):
        if (
            module
            and module.__name__.startswith("detflow")
            and (getattr(module, "build_model", None) is build_model)
        ):
            monkeypatch.setattr(module, "build_model", counted)
    seen = []
    plan_and_train(
        model_config=AUTO_MODEL,
        postprocess=AUTO_POSTPROCESS,
        train_json=data / "augmented" / "train.json",
        val_json=data / "split" / "val.json",
        out_dir=tmp_path,
        options=dataclasses.replace(OPTIONS, epochs=1),
        on_plan=lambda plan: seen.append(list(calls)),
    )
    assert seen == [[]]  # nothing built while planning
    assert calls == ["fcos_mobilenet_v2"]
    state = read_checkpoint(tmp_path / "last.pt")
    assert state["plan"]["choices"]["model.name"]["value"] == "fcos_mobilenet_v2"
    assert state["train_options"]["epochs"] == 1 and state["plan"]["train"]["epochs"] == 1


@pytest.mark.parametrize("name", ["fcos_mobilenet_v2", "fasterrcnn_mobilenet_v2"])
def test_a_skeleton_has_the_models_geometry_and_no_weights(name):
    skeleton = build_skeleton(name=name, num_classes=3, min_size=352, max_size=480)
    model = build_model(name=name, num_classes=3, min_size=352, max_size=480)
    assert all(p.device.type == "meta" for p in skeleton.parameters())
    assert input_size(skeleton) == input_size(model)
    for size in ((352, 480), (200, 333)):
        ours, theirs = AnchorGrid(skeleton).anchors(size), AnchorGrid(model).anchors(size)
        assert torch.equal(ours[0], theirs[0]) and ours[1] == theirs[1]
    with pytest.raises(build.ConfigError, match="model.name='yolo9'"):
        build_skeleton(name="yolo9", num_classes=1)


@pytest.mark.parametrize("levels", [[8, 16, 32], [16, 32, 64], [32]])
def test_a_skeletons_strides_follow_fcos_levels(levels):
    """The data check measures the pyramid the model has (issue 38's lighter candidates)."""
    structure = {"head_conv": "depthwise", "fpn_channels": 64, "levels": levels}
    skeleton = build_skeleton(name="fcos_mobilenet_v2", num_classes=3, **structure)
    model = build_model(name="fcos_mobilenet_v2", num_classes=3, **structure)
    ours, theirs = AnchorGrid(skeleton).anchors((416, 416)), AnchorGrid(model).anchors((416, 416))
    assert torch.equal(ours[0], theirs[0]) and ours[1] == theirs[1]
    assert ours[1] == [math.ceil(416 / s) ** 2 for s in levels]  # 64: pooled from 13×13
    strides = sorted({int(w) for w in (ours[0][:, 2] - ours[0][:, 0]).tolist()})
    assert strides == levels
    with pytest.raises(ConfigError, match="model.levels=.8, 64. is not allowed"):
        build_skeleton(name="fcos_mobilenet_v2", num_classes=3, levels=[8, 64])


def test_a_plan_records_the_fcos_structure_the_checkpoint_rebuilds(data):
    structure = {"head_conv": "depthwise", "fpn_channels": 64, "levels": [8, 16, 32]}
    model = {**TINY_MODEL, "name": "fcos_mobilenet_v2", **structure}
    model.pop("test_proposals")
    plan = _plan(data, model=model, options=dataclasses.replace(OPTIONS, epochs=1))
    assert {k: plan.model[k] for k in structure} == structure
    assert plan.to_dict()["model"]["levels"] == [8, 16, 32]


def test_fcos_structure_keys_go_to_fcos_only_when_auto_chooses():
    from detflow.train.model_choice import MULTI_LEVEL, SINGLE_LEVEL, candidate

    config = {**AUTO_MODEL, "head_conv": "depthwise", "levels": [8, 16, 32]}
    assert candidate(config, MULTI_LEVEL)["levels"] == [8, 16, 32]
    assert candidate(config, MULTI_LEVEL)["head_conv"] == "depthwise"
    single = candidate(config, SINGLE_LEVEL)
    assert "head_conv" not in single and "levels" not in single


@pytest.mark.parametrize(("grouping", "world"), [(False, 1), (True, 1), (False, 3), (True, 2)])
def test_batches_per_epoch_counts_what_the_loader_yields(data, grouping, world):
    dataset = DetectionDataset(data / "augmented" / "train.json")
    dataset.images[1] = {**dataset.images[1], "width": 10, "height": 50}  # one tall image
    counted = batches_per_epoch(
        dataset.images, batch_size=4, aspect_ratio_grouping=grouping, world_size=world
    )
    for rank in range(world):
        loader = train_loader(
            dataset,
            batch_size=4,
            seed=0,
            aspect_ratio_grouping=grouping,
            rank=rank,
            world_size=world,
        )
        assert counted == len(loader)


def test_detflow_plan_prints_every_choice_and_its_reason(data, tmp_path):
    result = run(
        [
            "detflow",
            "plan",
            "--params",
            str(REPO / "params.yaml"),
            "--train",
            str(data / "augmented" / "train.json"),
            "--val",
            str(data / "split" / "val.json"),
        ],
        cwd=tmp_path,
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("data check: 6 train images")
    chosen = [line.split("=")[0] for line in lines[1:]]
    assert chosen == [
        "auto: model.tiles",
        "auto: model.name",
        "auto: model.min_size",
        "auto: postprocess.max_detections",
        "auto: train.epochs",
        "auto: train.warmup_steps",
    ]
    assert all(line.endswith(")") and " (" in line for line in lines[1:])
    missing = run(["detflow", "plan", "--params", str(REPO / "params.yaml")], cwd=tmp_path,
                  check=False)  # fmt: skip
    assert missing.returncode == 2
    assert "data/augmented/train.json: no such split file; run `dvc repro augment`" in (
        missing.stderr
    )


def _large_images(root, *, images=3, boxes=(20, 40), side=(8, 24), seed=0):
    """Generated large images (1200-1800 px) with small boxes drawn on them: a canonical
    dataset JSON under ``root``."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    dataset = manifest.new_dataset(class_names=["dot"])
    (root / "images").mkdir(parents=True)
    for i in range(images):
        width, height = (int(v) for v in rng.integers(1200, 1800, 2))
        image = Image.new("RGB", (width, height), (40, 40, 40))
        draw = ImageDraw.Draw(image)
        image_id = manifest.add_image(
            dataset, file_name=f"{i}.png", width=width, height=height, source="s", group=str(i)
        )
        for _ in range(int(rng.integers(*boxes))):
            s = float(rng.uniform(*side))
            x, y = rng.uniform(0, width - s), rng.uniform(0, height - s)
            draw.ellipse([x, y, x + s, y + s], fill=(230, 230, 230))
            manifest.add_box(dataset, image_id=image_id, category_id=1, xywh=[x, y, s, s])
        image.save(root / "images" / f"{i}.png")
    manifest.save_dataset(dataset, root / "train.json", image_dir=root / "images")
    return root / "train.json"


def test_auto_tiles_small_objects_in_large_images_and_the_stage_cuts_what_was_planned(tmp_path):
    train_json = _large_images(tmp_path / "large")
    dataset = manifest.load_dataset(train_json)
    model = {**AUTO_MODEL, "min_size": "auto", "max_size": "auto", "tiles": "auto"}
    plan = _plan_on(dataset, model)
    tiles = plan.choices["model.tiles"]
    assert tiles["value"] == {"size": 416, "overlap": 24} and "640 px" in tiles["reason"]
    assert plan.model["min_size"] == plan.model["max_size"] == 416 and "tiles" not in plan.model
    counts = plan.tiles["counts"]
    assert counts["images_in"] == 3 and counts["boxes_never_whole"] == 0
    assert plan.check["data"]["images"] == counts["tiles_out"]  # the plan measures the tiles
    assert plan.metrics()["auto"]["tiles"] == "size 416 overlap 24"
    trained = cut_training_tiles(
        plan, train_json=train_json, out_dir=tmp_path / "t", max_pixels=10**8
    )
    assert trained == tmp_path / "t" / "train.json"
    cut = manifest.load_dataset(trained)
    assert len(cut["images"]) == counts["tiles_out"]
    assert all((tmp_path / "t" / "images" / im["file_name"]).is_file() for im in cut["images"])
    assert json.loads((tmp_path / "t" / "tiles.json").read_text())["counts"] == counts


def test_tiles_off_set_and_wrong(tmp_path, data):
    large = manifest.load_dataset(_large_images(tmp_path / "large", images=1))
    model = {**AUTO_MODEL, "min_size": "auto", "max_size": "auto"}
    off = _plan_on(large, {**model, "tiles": "off"})
    assert off.tiles is None and off.choices["model.tiles"]["value"] == "off"
    assert cut_training_tiles(off, train_json=tmp_path / "x.json", out_dir=tmp_path / "o",
                              max_pixels=10**8) == tmp_path / "x.json"  # fmt: skip
    assert json.loads((tmp_path / "o" / "tiles.json").read_text()) == {"tiles": None}
    fixed = _plan_on(large, {**model, "tiles": {"size": 320, "overlap": 32}})
    assert fixed.tiles["size"] == 320 and fixed.model["min_size"] == 320
    small_images = manifest.load_dataset(data / "augmented" / "train.json")
    auto = _plan_on(small_images, {**model, "tiles": "auto"})  # 64-px images: nothing to tile
    assert auto.tiles is None and "whole images" in auto.choices["model.tiles"]["reason"]
    for wrong, match in (("always", "model.tiles='always' is not allowed"),
                         ({"size": 320}, "set exactly size and overlap")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            _plan_on(large, {**model, "tiles": wrong})
    with pytest.raises(ConfigError, match="model.tiles: training on tiles runs in one process"):
        plan_training(
            model_config={**model, "tiles": "auto"},
            postprocess=AUTO_POSTPROCESS,
            options=OPTIONS,
            train_dataset=large,
            world_size=2,
        )


def test_a_tiled_model_caps_the_merged_image_at_its_densest_full_image(tmp_path):
    """130-150 dots per 1200-1800 px image: each 416 px tile holds far fewer, but the merged
    full image keeps them all (postprocess.max_detections from the full images)."""
    dataset = manifest.load_dataset(_large_images(tmp_path / "large", boxes=(130, 151)))
    model = {**AUTO_MODEL, "min_size": "auto", "max_size": "auto", "tiles": "auto"}
    plan = _plan_on(dataset, model)
    densest = max(Counter(a["image_id"] for a in dataset["annotations"]).values())
    assert plan.tiles is not None and densest > 130
    assert plan.postprocess.max_detections == plan.tiles["max_detections"] == densest
    reason = plan.choices["postprocess.max_detections"]["reason"]
    assert reason.startswith("tiled: the merged full image is capped") and str(densest) in reason


def _plan_on(dataset, model):
    return plan_training(
        model_config=model, postprocess=AUTO_POSTPROCESS, options=OPTIONS, train_dataset=dataset
    )


@pytest.mark.slow
def test_a_model_trained_on_tiles_validates_sliced_and_records_its_tiles(tmp_path):
    """The train stage's path on large images: plan (tiles), cut, one epoch on the tiles;
    val is predicted sliced on its full images, and the checkpoint carries the tiles."""
    from detflow.model.checkpoint_file import stored_tiles
    from detflow.train.loop import train_detector

    train_json = _large_images(tmp_path / "train", images=2)
    val_json = _large_images(tmp_path / "val", images=1, seed=1)
    model = {"name": "fcos_mobilenet_v2", "backbone_weights": "none", "min_size": "auto",
             "max_size": "auto", "tiles": "auto"}  # fmt: skip
    plan = plan_training(
        model_config=model,
        postprocess=AUTO_POSTPROCESS,
        options=dataclasses.replace(OPTIONS, epochs=1, batch_size=4),
        train_dataset=manifest.load_dataset(train_json),
        val_dataset=manifest.load_dataset(val_json),
    )
    tiles_json = cut_training_tiles(
        plan, train_json=train_json, out_dir=tmp_path / "tiles", max_pixels=10**8
    )
    best = train_detector(
        plan=plan, train_json=tiles_json, val_json=val_json, out_dir=tmp_path / "out"
    )
    state = read_checkpoint(tmp_path / "out" / "best.pt")
    tiles = stored_tiles(state)
    assert (tiles.size, tiles.overlap) == (416, 24) and state["model"]["min_size"] == 416
    assert state["plan"]["tiles"]["counts"]["tiles_out"] == len(
        manifest.load_dataset(tiles_json)["images"]
    )
    assert 0.0 <= best["val_map50"] <= 1.0 and math.isfinite(best["val_loss"])
