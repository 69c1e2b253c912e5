"""clean on a corpus of broken inputs built here: every case lands in the report with the
right reason, nothing raises, and kept + dropped = input for images and boxes."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from detflow import manifest
from detflow.clean import CleanPolicy, clean_dataset
from detflow.files import sha256_file


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _rgb(seed: int, size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _exif_rotated_jpeg() -> bytes:
    """Stored 64×48 with orientation 6: displayed 48×64 (rotated 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(_rgb(7), "JPEG", exif=exif.tobytes(), quality=95)


CASES = {  # file name → (bytes, expected image outcome)
    "truncated.jpg": (_encode(_rgb(1, (256, 256)), "JPEG")[:3000], "unreadable_image"),
    "zero.jpg": (b"", "unreadable_image"),
    "text.jpg": (b"this is not an image\n", "unreadable_image"),
    "alpha.png": (
        _encode(Image.new("RGBA", (40, 30), (200, 10, 10, 90)), "PNG"),
        "converted_to_rgb",
    ),
    "deep.png": (
        _encode(Image.fromarray(np.full((30, 40), 40000, np.uint16)), "PNG"),
        "converted_to_rgb",
    ),
    "palette.gif": (_encode(_rgb(3).convert("P"), "GIF"), "converted_to_rgb"),
    "rotated.jpg": (_exif_rotated_jpeg(), "exif_rotated"),
    "png_named.jpg": (_encode(_rgb(4), "PNG"), "wrong_extension"),
    "huge.png": (_encode(Image.new("1", (20000, 20000)), "PNG"), "too_many_pixels"),
    "good.jpg": (_encode(_rgb(5), "JPEG"), None),
}
BOXES = [  # (file, category, xywh as written, expected box outcome)
    ("good.jpg", 1, [5, 5, 20, 20], "kept"),
    ("good.jpg", 1, [5.5, 5, 20, 20], "duplicate_box"),
    ("good.jpg", 2, [5, 5, 20, 20], "kept"),  # same place, other class: kept
    ("good.jpg", 1, "INF", "non_finite"),
    ("good.jpg", 1, [10, 10, -5, 8], "non_positive_size"),  # inverted corners
    ("good.jpg", 1, [10, 10, 0, 8], "non_positive_size"),  # zero area
    ("good.jpg", 1, [60, 40, 8, 8], "clipped"),  # 4 px over the edge: clipped
    ("good.jpg", 1, [100, 10, 8, 8], "out_of_bounds"),
    ("good.jpg", 1, [30, 30, 1, 1], "too_small"),
    ("good.jpg", 9, [5, 5, 20, 20], "unknown_class"),
    ("rotated.jpg", 1, [0, 0, 10, 20], "kept"),  # stored (0,0)-(10,20) → displayed (28,0)-(48,10)
    ("zero.jpg", 1, [1, 1, 5, 5], "image_dropped:unreadable_image"),
]


def _corpus(root):
    (root / "images").mkdir(parents=True)
    ds = manifest.new_dataset(class_names=["cat", "dog"])
    ids = {}
    for name, (data, _) in CASES.items():
        (root / "images" / name).write_bytes(data)
        ids[name] = manifest.add_image(
            ds, file_name=name, width=64, height=48, source=name, group=name
        )
    for name, category, xywh, _ in BOXES:
        manifest.add_box(
            ds,
            image_id=ids[name],
            category_id=category,
            xywh=[0, 0, 1, 1] if xywh == "INF" else xywh,
        )
        if xywh == "INF":
            ds["annotations"][-1]["bbox"] = ["INF", 0, 4, 4]
    text = json.dumps({**ds, "detflow": {"image_dir": "images"}}).replace('"INF"', "1e400")
    (root / "dataset.json").write_text(text)
    return root / "dataset.json"


@pytest.fixture
def corpus_report(tmp_path):
    raw = _corpus(tmp_path / "raw")
    before = {p.name: sha256_file(p) for p in (tmp_path / "raw").rglob("*") if p.is_file()}
    report = clean_dataset(
        in_json=raw, out_dir=tmp_path / "clean", policy=CleanPolicy(near_duplicate_distance=None)
    )
    after = {p.name: sha256_file(p) for p in (tmp_path / "raw").rglob("*") if p.is_file()}
    assert before == after  # the source is never modified
    return report, manifest.load_dataset(tmp_path / "clean" / "dataset.json")


def test_every_image_case_has_its_outcome(corpus_report):
    report, clean = corpus_report
    dropped = {d["source"]: d["reason"] for d in report["dropped"] if d["item"] == "image"}
    changed = {im["source"]: im.get("changes", []) for im in clean["images"]}
    for name, (_, outcome) in CASES.items():
        if outcome in ("unreadable_image", "too_many_pixels"):
            assert dropped.get(name) == outcome, name
        elif outcome is None:
            assert changed[name] == [], name
        else:
            assert outcome in changed[name], (name, changed.get(name))
    assert report["images_kept"] + report["images_dropped"] == report["images_in"] == len(CASES)


def test_every_box_case_has_its_outcome(corpus_report):
    report, clean = corpus_report
    reasons = [d["reason"] for d in report["dropped"] if d["item"] == "box"]
    expected = [outcome for *_, outcome in BOXES if outcome not in ("kept", "clipped")]
    assert sorted(reasons) == sorted(expected)
    assert report["boxes_clipped"] == 1
    assert report["boxes_kept"] + report["boxes_dropped"] == report["boxes_in"] == len(BOXES)
    rotated = next(im for im in clean["images"] if im["source"] == "rotated.jpg")
    assert (rotated["width"], rotated["height"]) == (48, 64)
    box = next(a for a in clean["annotations"] if a["image_id"] == rotated["id"])
    assert box["bbox"] == pytest.approx([28, 0, 20, 10])


def test_kept_images_are_rgb_and_flags_are_reported(corpus_report, tmp_path):
    report, clean = corpus_report
    folder = tmp_path / "clean" / "images"
    for image in clean["images"]:
        with Image.open(folder / image["file_name"]) as opened:
            assert opened.mode == "RGB" and opened.size == (image["width"], image["height"])
    assert report["quality_flags"].get("low_information", 0) >= 2  # flat alpha and 16-bit images
    json.dumps(report, allow_nan=False)


def test_repair_policy_keeps_the_decodable_part_of_a_truncated_jpeg(tmp_path):
    raw = _corpus(tmp_path / "raw")
    report = clean_dataset(
        in_json=raw, out_dir=tmp_path / "clean", policy=CleanPolicy(broken_images="repair")
    )
    clean = manifest.load_dataset(tmp_path / "clean" / "dataset.json")
    repaired = [im for im in clean["images"] if "repaired" in im.get("changes", [])]
    assert [im["source"] for im in repaired] == ["truncated.jpg"]
    assert (repaired[0]["width"], repaired[0]["height"]) == (256, 256)
    assert report["images_dropped_by_reason"]["unreadable_image"] == 2  # zero-byte, text


def test_resize_letterbox_moves_boxes_with_pixels(tmp_path):
    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    ds = manifest.new_dataset(class_names=["a"])
    image = Image.new("RGB", (200, 100))
    image.paste((255, 255, 255), (20, 10, 60, 50))
    (root / "images" / "x.png").write_bytes(_encode(image, "PNG"))
    manifest.add_image(ds, file_name="x.png", width=200, height=100, source="x.png", group="x")
    manifest.add_box(ds, image_id=1, category_id=1, xywh=[20, 10, 40, 40])
    manifest.save_dataset(ds, root / "dataset.json", image_dir=root / "images")
    clean_dataset(
        in_json=root / "dataset.json",
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
    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    ds = manifest.new_dataset(class_names=["a"])
    base = np.asarray(_rgb(11, (96, 96)))
    for k in range(3):
        noisy = np.clip(base.astype(int) + k, 0, 255).astype(np.uint8)  # near-identical
        (root / "images" / f"n{k}.png").write_bytes(_encode(Image.fromarray(noisy), "PNG"))
        manifest.add_image(
            ds, file_name=f"n{k}.png", width=96, height=96, source=f"n{k}.png", group=f"g{k}"
        )
        manifest.add_box(ds, image_id=k + 1, category_id=1, xywh=[1, 1, 10, 10])
    manifest.save_dataset(ds, root / "dataset.json", image_dir=root / "images")
    report = clean_dataset(
        in_json=root / "dataset.json",
        out_dir=tmp_path / "clean",
        policy=CleanPolicy(near_duplicate_policy="drop"),
    )
    assert report["images_dropped_by_reason"] == {"near_duplicate": 2}
    assert report["boxes_kept"] + report["boxes_dropped"] == 3
    assert len(list((tmp_path / "clean" / "images").iterdir())) == 1
