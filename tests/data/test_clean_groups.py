"""clean's grouping rules on generated data: flipped and turned copies, names of one original."""

import numpy as np
from PIL import Image

from detflow.data import manifest
from detflow.data.clean import clean_dataset
from detflow.data.clean_groups import original_name
from detflow.data.split import SplitOptions, split_dataset

WIDTH, HEIGHT = 96, 72
# copies of each original: PIL transpose, and the box (COCO xywh pixels) in the copy
COPIES = {
    "flip_left_right": lambda x, y, w, h: [WIDTH - x - w, y, w, h],
    "flip_top_bottom": lambda x, y, w, h: [x, HEIGHT - y - h, w, h],
    "rotate_90": lambda x, y, w, h: [y, WIDTH - x - w, h, w],
    "rotate_180": lambda x, y, w, h: [WIDTH - x - w, HEIGHT - y - h, w, h],
    "rotate_270": lambda x, y, w, h: [HEIGHT - y - h, x, h, w],
}


def _photo(rng) -> tuple[Image.Image, list[float]]:
    """A smooth random colour image (WIDTH x HEIGHT) with a bright rectangle; its box."""
    coarse = rng.uniform(0, 255, (5, 6, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.BICUBIC)
    x, y = int(rng.integers(5, 50)), int(rng.integers(5, 35))
    pixels = np.array(image)
    pixels[y : y + 20, x : x + 30] = 250
    return Image.fromarray(pixels), [float(x), float(y), 30.0, 20.0]


def _turned_set(root, *, originals: int, seed: int = 0):
    """A raw canonical dataset: each original and its 5 flipped or turned copies under other
    names, each image its own group; returns (dataset.json, family of each source)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    ds, family = manifest.new_dataset(class_names=["a", "b"]), {}
    names = rng.permutation(originals * (len(COPIES) + 1))  # copies named out of order
    for index in range(originals):
        image, box = _photo(rng)
        versions = [(image, box)] + [
            (image.transpose(getattr(Image.Transpose, kind.upper())), move(*box))
            for kind, move in COPIES.items()
        ]
        for image_k, box_k in versions:
            name = f"img_{names[len(family)]:04d}.png"
            image_k.save(root / "images" / name)
            width, height = image_k.size
            new = manifest.add_image(
                ds, file_name=name, width=width, height=height, source=name, group=name
            )
            manifest.add_box(ds, image_id=new, category_id=1 + index % 2, xywh=box_k)
            family[name] = index
    manifest.save_dataset(ds, root / "dataset.json", image_dir=root / "images")
    return root / "dataset.json", family


def test_turned_copies_share_a_group_and_never_cross_the_split(tmp_path):
    raw, family = _turned_set(tmp_path / "raw", originals=30)
    report = clean_dataset(in_json=raw, out_dir=tmp_path / "clean", workers=1)
    assert report["images_kept"] == 180 and report["groups_merged"] == 150
    assert report["links_by_rule"]["turned_near_duplicate"] >= 150
    assert report["links_by_rule"]["near_duplicate"] == 0  # the upright hash alone: none
    merged = report["merged_groups"]
    assert len(merged) == 30 and sum(len(g["images"]) for g in merged) == 180
    for group in merged:  # every copy reported, with its original and siblings only
        assert len({family[source] for source in group["images"]}) == 1
        assert len(group["images"]) == 6 and "turned_near_duplicate" in group["rules"]
    split_dataset(
        in_json=tmp_path / "clean" / "dataset.json",
        out_dir=tmp_path / "split",
        options=SplitOptions(),
    )
    side = {}
    for name in ("train", "val", "test"):
        part = manifest.load_dataset(tmp_path / "split" / f"{name}.json")
        side.update({im["source"]: name for im in part["images"]})
    test = [s for s, name in side.items() if name == "test"]
    leaked = [s for s in test if any(side[o] != "test" for o in side if family[o] == family[s])]
    assert test and not leaked


def test_names_of_one_original_share_a_group(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "raw" / "images").mkdir(parents=True)
    ds = manifest.new_dataset(class_names=["a"])
    names = [
        "train/images/IMG_7 2_jpg.rf.0123456789abcdef0123456789abcdef.jpg",
        "valid/images/IMG_7 2_jpg.rf.fedcba9876543210fedcba9876543210.jpg",
        "test/images/IMG_7 3_jpg.rf.00000000000000000000000000000000.jpg",
        "IMG_7 2_jpg.rf.short.jpg",  # not the pattern: no link
    ]
    for k, source in enumerate(names):
        image, box = _photo(rng)  # unrelated pixels: only the name can link them
        image.save(tmp_path / "raw" / "images" / f"{k}.png")
        new = manifest.add_image(
            ds, file_name=f"{k}.png", width=WIDTH, height=HEIGHT, source=source, group=source
        )
        manifest.add_box(ds, image_id=new, category_id=1, xywh=box)
    manifest.save_dataset(
        ds, tmp_path / "raw" / "dataset.json", image_dir=tmp_path / "raw" / "images"
    )
    report = clean_dataset(
        in_json=tmp_path / "raw" / "dataset.json", out_dir=tmp_path / "clean", workers=1
    )
    assert report["links_by_rule"] == {
        "near_duplicate": 0,
        "turned_near_duplicate": 0,
        "original_name": 1,
    }
    assert report["merged_groups"] == [
        {"group": names[0], "groups_in": 2, "rules": ["original_name"], "images": names[:2]}
    ]
    assert original_name(names[2]) == "IMG_7 3.jpg" and original_name(names[3]) is None
