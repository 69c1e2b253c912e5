"""clean's policies beyond the bad-input corpus (tests/corpus/ holds every broken image
and box case): quality flags, letterbox resize moving boxes with pixels, near-duplicate drop."""

import numpy as np
import pytest
from PIL import Image

from detflow.data import manifest
from detflow.data.clean import CleanPolicy, clean_dataset

from corpus.runner import encode, noise


def _dataset(root, images: dict[str, Image.Image], boxes=()) -> None:
    """``root/dataset.json`` + ``root/images/``: one group per image; ``boxes``: (name, xywh)."""
    (root / "images").mkdir(parents=True)
    ds = manifest.new_dataset(class_names=["a"])
    ids = {}
    for name, image in images.items():
        (root / "images" / name).write_bytes(encode(image))
        ids[name] = manifest.add_image(
            ds, file_name=name, width=image.width, height=image.height, source=name, group=name
        )
    for name, xywh in boxes:
        manifest.add_box(ds, image_id=ids[name], category_id=1, xywh=xywh)
    manifest.save_dataset(ds, root / "dataset.json", image_dir=root / "images")


def test_quality_flags_are_reported_not_acted_on(tmp_path):
    flat = {"flat.png": Image.new("RGB", (40, 30), (90, 90, 90))}
    dark = {"dark.png": Image.new("RGB", (40, 30), (2, 2, 2))}
    _dataset(tmp_path / "raw", {**flat, **dark, "good.png": noise(5)})
    report = clean_dataset(
        in_json=tmp_path / "raw" / "dataset.json",
        out_dir=tmp_path / "clean",
        policy=CleanPolicy(near_duplicate_distance=None),
    )
    assert report["images_kept"] == 3 and report["images_dropped"] == 0
    assert report["quality_flags"].get("low_information", 0) >= 2  # both flat images


def test_resize_letterbox_moves_boxes_with_pixels(tmp_path):
    image = Image.new("RGB", (200, 100))
    image.paste((255, 255, 255), (20, 10, 60, 50))
    _dataset(tmp_path / "raw", {"x.png": image}, [("x.png", [20, 10, 40, 40])])
    clean_dataset(
        in_json=tmp_path / "raw" / "dataset.json",
        out_dir=tmp_path / "clean",
        policy=CleanPolicy(resize="letterbox", resize_size=100),
    )
    clean = manifest.load_dataset(tmp_path / "clean" / "dataset.json")
    assert (clean["images"][0]["width"], clean["images"][0]["height"]) == (100, 100)
    assert clean["annotations"][0]["bbox"] == pytest.approx([10, 30, 20, 20])
    pixels = np.asarray(Image.open(tmp_path / "clean" / "images" / clean["images"][0]["file_name"]))
    ys, xs = np.nonzero(pixels[..., 0] > 128)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (10, 30, 30, 50)


def test_near_duplicate_drop_policy_keeps_one_per_cluster(tmp_path):
    base = np.asarray(noise(11, (96, 96)))
    images = {  # near-identical
        f"n{k}.png": Image.fromarray(np.clip(base.astype(int) + k, 0, 255).astype(np.uint8))
        for k in range(3)
    }
    _dataset(tmp_path / "raw", images, [(name, [1, 1, 10, 10]) for name in images])
    report = clean_dataset(
        in_json=tmp_path / "raw" / "dataset.json",
        out_dir=tmp_path / "clean",
        policy=CleanPolicy(near_duplicate_policy="drop"),
    )
    assert report["images_dropped_by_reason"] == {"near_duplicate": 2}
    assert report["boxes_kept"] + report["boxes_dropped"] == 3
    assert len(list((tmp_path / "clean" / "images").iterdir())) == 1
