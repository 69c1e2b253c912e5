"""augment: bbox-safe, deterministic across runs and worker counts, train split only."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from detflow.core.errors import ConfigError
from detflow.data import manifest
from detflow.data.augment import (
    AugmentOptions,
    augment_dataset,
    build_pipeline,
    oversample_plan,
    write_preview,
)
from detflow.data.formats.synthetic import generate_synthetic
from detflow.data.split import SplitOptions, split_dataset

from conftest import REPO

HEAVY = yaml.safe_load((REPO / "conf" / "augment" / "heavy.yaml").read_text())


def _write_dataset(folder: Path, images: list[tuple[str, np.ndarray, list, list]], classes):
    """Canonical dataset from ``(file name, [H, W, 3] uint8, xyxy boxes, category ids)``."""
    (folder / "images").mkdir(parents=True)
    dataset = manifest.new_dataset(class_names=classes)
    for name, pixels, boxes, labels in images:
        Image.fromarray(pixels).save(folder / "images" / name)
        image_id = manifest.add_image(
            dataset,
            file_name=name,
            width=pixels.shape[1],
            height=pixels.shape[0],
            source=name,
            group=name,
        )
        for (x1, y1, x2, y2), label in zip(boxes, labels, strict=True):
            manifest.add_box(
                dataset, image_id=image_id, category_id=label, xywh=[x1, y1, x2 - x1, y2 - y1]
            )
    manifest.save_dataset(dataset, folder / "train.json", image_dir=folder / "images")
    return folder / "train.json"


def _synthetic(folder: Path, num_images: int = 12, size: int = 96) -> Path:
    scan = generate_synthetic(
        num_images=num_images, image_size=size, classes=["circle", "square"], seed=3
    )
    items = []
    for index, image in enumerate(scan.images):
        pixels = np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"))
        boxes = [list(b.xyxy) for b in image.boxes]
        labels = [scan.class_names.index(b.class_name) + 1 for b in image.boxes]
        items.append((f"im {index:02d}.png", pixels, boxes, labels))
    return _write_dataset(folder, items, scan.class_names)


def _augment(train_json, out_dir, seed=7, **overrides):
    options = {
        "transforms": HEAVY["transforms"],
        "copies": 2,
        "min_visibility": 0.3,
        "min_area": 4.0,
        "workers": 1,
    }
    options = AugmentOptions.from_config({**options, **overrides}, seed=seed)
    return augment_dataset(train_json=train_json, out_dir=out_dir, options=options)


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    train = _synthetic(tmp_path / "src")
    first = _augment(train, tmp_path / "a", workers=1)
    second = _augment(train, tmp_path / "b", workers=1)
    parallel = _augment(train, tmp_path / "c", workers=2)
    assert first == second == parallel
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b") == _tree(tmp_path / "c")
    _augment(train, tmp_path / "d", seed=8)
    assert _tree(tmp_path / "d") != _tree(tmp_path / "a")


def test_boxes_stay_inside_their_images_and_every_box_is_accounted_for(tmp_path):
    train = _synthetic(tmp_path / "src", num_images=20)
    report = _augment(train, tmp_path / "out", copies=3)
    out = manifest.load_dataset(tmp_path / "out" / "train.json")
    sizes = {im["id"]: (im["width"], im["height"]) for im in out["images"]}
    for ann in out["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        assert w > 0 and h > 0
        assert x >= 0 and y >= 0 and x + w <= width + 1e-6 and y + h <= height + 1e-6
    for image in out["images"]:
        with Image.open(tmp_path / "out" / "images" / image["file_name"]) as pil:
            assert pil.size == (image["width"], image["height"])
    assert report["images_out"] == report["images_in"] * 4
    assert report["boxes_out"] + report["boxes_dropped"] == report["boxes_in"] * 4
    assert sum(report["boxes_dropped_per_class"].values()) == report["boxes_dropped"]


def test_horizontal_flip_mirrors_a_known_box_exactly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, size=(60, 100, 3), dtype=np.uint8)
    train = _write_dataset(tmp_path / "src", [("a.png", pixels, [[10, 20, 30, 45]], [1])], ["x"])
    _augment(train, tmp_path / "out", transforms=[{"name": "HorizontalFlip", "p": 1.0}], copies=1)
    out = manifest.load_dataset(tmp_path / "out" / "train.json")
    flipped = next(im for im in out["images"] if im.get("augmented_from") == "a.png")
    (ann,) = [a for a in out["annotations"] if a["image_id"] == flipped["id"]]
    assert ann["bbox"] == [100.0 - 30.0, 20.0, 20.0, 25.0]
    result = np.asarray(Image.open(tmp_path / "out" / "images" / flipped["file_name"]))
    assert np.array_equal(result, pixels[:, ::-1])
    original = next(im for im in out["images"] if im["file_name"] == "a.png")
    assert (tmp_path / "out" / "images" / "a.png").read_bytes() == (
        tmp_path / "src" / "images" / "a.png"
    ).read_bytes()
    assert "augmented_from" not in original


def test_boxes_cropped_away_are_dropped_and_counted_per_class(tmp_path):
    pixels = np.zeros((100, 100, 3), dtype=np.uint8)
    boxes, labels = [[5, 5, 30, 30], [60, 60, 90, 90], [40, 10, 60, 30]], [1, 2, 2]
    train = _write_dataset(tmp_path / "src", [("a.png", pixels, boxes, labels)], ["cat", "dog"])
    crop = [{"name": "Crop", "x_min": 0, "y_min": 0, "x_max": 50, "y_max": 50}]
    report = _augment(train, tmp_path / "out", transforms=crop, copies=1, min_visibility=0.6)
    # kept: cat (inside); dropped: the dog outside the crop and the dog with half its area left
    assert report["boxes_dropped"] == 2
    assert report["boxes_dropped_per_class"] == {"cat": 0, "dog": 2}
    assert report["boxes_out"] == 3 + 1


def test_ignored_boxes_are_left_out_of_the_training_images_and_counted(tmp_path):
    pixels = np.zeros((60, 100, 3), dtype=np.uint8)
    boxes, labels = [[10, 20, 30, 45], [50, 10, 70, 30]], [1, 1]
    train = _write_dataset(tmp_path / "src", [("a.png", pixels, boxes, labels)], ["x"])
    dataset = json.loads(train.read_text())
    dataset["annotations"][1]["ignore"] = "difficult"  # VOC difficult: training leaves it out
    train.write_text(json.dumps(dataset))
    flip = [{"name": "HorizontalFlip", "p": 1.0}]
    report = _augment(train, tmp_path / "out", transforms=flip, copies=1)
    out = manifest.load_dataset(tmp_path / "out" / "train.json")
    assert report["boxes_in"] == 2 and report["boxes_ignored_in"] == 1
    assert sorted(a["bbox"] for a in out["annotations"]) == [
        [10.0, 20.0, 20.0, 25.0],
        [70.0, 20.0, 20.0, 25.0],
    ]


def test_val_and_test_are_never_augmented(tmp_path):
    clean = _synthetic(tmp_path / "clean", num_images=40, size=64)
    split_dataset(
        in_json=clean,
        out_dir=tmp_path / "split",
        options=SplitOptions(train=0.6, val=0.2, test=0.2, seed=0),
    )
    before = _tree(tmp_path / "split") | _tree(tmp_path / "clean")
    _augment(tmp_path / "split" / "train.json", tmp_path / "aug")
    assert _tree(tmp_path / "split") | _tree(tmp_path / "clean") == before
    train_names = {
        im["file_name"]
        for im in json.loads((tmp_path / "split" / "train.json").read_text())["images"]
    }
    out = manifest.load_dataset(tmp_path / "aug" / "train.json")
    originals = {im["file_name"] for im in out["images"] if "augmented_from" not in im}
    sources = {im["augmented_from"] for im in out["images"] if "augmented_from" in im}
    assert originals == train_names and sources == train_names


def test_oversampling_lifts_the_minority_class_to_the_ratio(tmp_path):
    pixels = np.zeros((40, 40, 3), dtype=np.uint8)
    items = [(f"c{i}.png", pixels, [[1, 1, 9, 9], [20, 20, 30, 30]], [1, 1]) for i in range(5)]
    items += [(f"d{i}.png", pixels, [[5, 5, 15, 15]], [2]) for i in range(2)]
    train = _write_dataset(tmp_path / "src", items, ["common", "rare"])
    dataset = manifest.load_dataset(train)
    assert oversample_plan(dataset, balance_ratio=None) == {}
    plan = oversample_plan(dataset, balance_ratio=0.5)  # 10 common boxes → rare needs 5
    assert sum(plan.values()) == 3 and set(plan) == {6, 7}
    report = _augment(train, tmp_path / "out", transforms=[], copies=0, balance_ratio=0.5)
    assert report["oversampled_copies"] == 3
    assert report["class_boxes_out"] == {"common": 10, "rare": 5}
    with pytest.raises(ConfigError, match="augment.balance_ratio=1.5 must be null or in"):
        AugmentOptions(balance_ratio=1.5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "NoSuchTransform"}, "NoSuchTransform.*not an albumentations transform"),
        ({"name": "HorizontalFlip", "probability": 0.5}, "HorizontalFlip"),
        ({"name": "GaussNoise", "std_range": [0.5, 0.1]}, "GaussNoise"),
        ({"name": "OneOf", "transforms": [{"name": "Nope"}]}, r"transforms\[0\].transforms\[0\]"),
    ],
)
def test_bad_transforms_fail_at_start_naming_the_transform(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_pipeline(transforms=[spec], min_visibility=0.3, min_area=4.0)
    with pytest.raises(ConfigError, match=message):  # the options build it once to check
        AugmentOptions(transforms=[spec])


@pytest.mark.parametrize(
    ("config", "outside", "message"),
    [
        ({"min_visibility": 2}, {}, r"augment.min_visibility=2 must be in \[0, 1\]"),
        ({"copies": -1}, {}, "augment.copies=-1 must be a number >= 0"),
        ({"copies": 1.5}, {}, "augment.copies=1.5 must be an integer"),
        ({"preview_samples": 0}, {}, "augment.preview_samples=0 must be a number > 0"),
        ({"transforms": {"name": "Blur"}}, {}, "augment.transforms=.* must be a list of mappings"),
        ({"seed": 1}, {}, "augment.seed is not a augment option; allowed: balance_ratio, "),
        ({}, {"max_pixels": "huge"}, "limits.max_pixels='huge' must be an integer"),
        ({}, {"max_pixels": -5}, "limits.max_pixels=-5 must be an integer > 0"),
        ({}, {"seed": "x"}, "seed='x' must be an integer"),
    ],
)
def test_augment_options_name_the_key_at_fault(config, outside, message):
    with pytest.raises(ConfigError, match=message):
        AugmentOptions.from_config(config, **outside)


def test_preview_grid_pairs_originals_with_their_copies(tmp_path):
    train = _synthetic(tmp_path / "src", num_images=6, size=64)
    _augment(train, tmp_path / "out", copies=1)
    tiles = write_preview(
        augmented_json=tmp_path / "out" / "train.json",
        out_png=tmp_path / "p.png",
        samples=3,
        cell=64,
    )
    assert tiles == 6
    with Image.open(tmp_path / "p.png") as grid:
        assert grid.size == (4 * 64, 2 * 64)  # 3 pairs → 6 tiles in rows of 4


def test_preview_without_copies_shows_the_originals(tmp_path):
    train = _synthetic(tmp_path / "src", num_images=6, size=64)
    _augment(train, tmp_path / "out", transforms=[], copies=0)
    out, dataset = tmp_path / "p.png", tmp_path / "out" / "train.json"
    assert write_preview(augmented_json=dataset, out_png=out, samples=5) == 5
    with Image.open(out) as grid:
        assert grid.size == (4 * 256, 2 * 256)
