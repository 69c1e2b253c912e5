"""Corpus cases: YOLO labels, images (collect reads headers, clean decodes) and boxes in the
canonical dataset."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from detflow.data import manifest
from detflow.data.collect import CollectOptions, collect_dataset

from corpus.runner import (
    GOOD_LINE,
    NAMES,
    Result,
    clean,
    collect,
    collect_then_clean,
    encode,
    exif_rotated_jpeg,
    noise,
    registry,
    write,
)

CASES, case = registry()

# --- YOLO (collect, then clean) ---------------------------------------------------------


def yolo(tmp: Path, files: dict[str, bytes | str], names=None) -> dict:
    """A YOLO folder: data.yaml, a good image with one box, plus ``files`` (relative paths)."""
    root = tmp / "src"
    write(root / "data.yaml", yaml.safe_dump({"names": names or NAMES}))
    write(root / "images" / "good.png", encode(noise(1)))
    write(root / "labels" / "good.txt", GOOD_LINE + "\n")
    for rel, data in files.items():
        write(root / rel, data)
    return {"format": "yolo", "path": str(root)}


def yolo_line(line: str):
    def run(tmp: Path) -> Result:
        source = yolo(tmp, {"images/case.png": encode(noise(2)), "labels/case.txt": line + "\n"})
        return collect_then_clean(source, tmp, images=2, boxes=2, item="case")

    return run


for _id, _line, _expected, _given in (
    ("yolo-too-few-columns", "0 0.5 0.5 0.2", "incomplete: bad_columns", "4 columns"),
    ("yolo-too-many-columns", "0 0.5 0.5 0.2 0.2 0.7", "incomplete: bad_columns", "6 columns"),
    ("yolo-nan", "0 nan 0.5 0.2 0.2", "incomplete: non_finite", "a NaN coordinate"),
    ("yolo-infinite", "0 0.5 inf 0.2 0.2", "incomplete: non_finite", "an inf coordinate"),
    ("yolo-non-numeric", "cat 0.5 0.5 0.2 0.2", "incomplete: non_numeric", "a class name, not id"),
    ("yolo-class-beyond-list", "7 0.5 0.5 0.2 0.2", "incomplete: unknown_class", "class id 7 of 2"),
    ("yolo-negative-class", "-1 0.5 0.5 0.2 0.2", "incomplete: unknown_class", "class id -1"),
    ("yolo-negative-size", "0 0.5 0.5 -0.2 0.2", "dropped: non_positive_size", "width < 0"),
    ("yolo-coords-above-1", "0 1.6 0.5 0.2 0.2", "incomplete: out_of_bounds", "centre x 1.6"),
    ("yolo-negative-coords", "0 -0.5 0.5 0.2 0.2", "incomplete: out_of_bounds", "centre x -0.5"),
    ("yolo-slightly-over-edge", "0 0.95 0.5 0.2 0.2", "changed: clipped", "3 px past the edge"),
    ("yolo-tiny-box", "0 0.5 0.5 0.01 0.01", "dropped: too_small", "a box under 2 px"),
):
    case(_id, "collect → clean", f"YOLO label line: {_given} (`{_line}`)", _expected)(
        yolo_line(_line)
    )


@case("yolo-empty-label", "collect", "YOLO: an empty label file (a negative)", "kept")
def _(tmp):
    source = yolo(tmp, {"images/case.png": encode(noise(2)), "labels/case.txt": ""})
    return collect(source, tmp / "raw", images=2, boxes=1, item="case")


@case("unicode-space-names", "collect → clean", "image `chien été 1.png` + its label", "kept")
def _(tmp):
    files = {"images/chien été 1.png": encode(noise(2)), "labels/chien été 1.txt": GOOD_LINE}
    return collect_then_clean(yolo(tmp, files), tmp, images=2, boxes=2, item="chien été 1")


@case("yolo-broken-data-yaml", "collect", "YOLO data.yaml that is not YAML", "error: data.yaml")
def _(tmp):
    source = yolo(tmp, {})
    write(Path(source["path"]) / "data.yaml", "names: [cat, dog\n")
    return collect(source, tmp / "raw", images=1, boxes=1, item="case")


@case(
    "yolo-yaml-python-tag",
    "collect",
    "data.yaml with `!!python/object/apply:os.system` (safe_load refuses)",
    "error: not valid YAML",
)
def _(tmp):
    source = yolo(tmp, {})
    marker = tmp / "pwned"
    write(
        Path(source["path"]) / "data.yaml",
        f"names: !!python/object/apply:os.system ['touch {marker}']\n",
    )
    result = collect(source, tmp / "raw", images=1, boxes=1, item="case")
    assert not marker.exists()
    return result


# --- images (collect reads headers; clean decodes) --------------------------------------


def yolo_image(name: str, data: bytes | Callable[[], bytes], *, stage: str):
    """An extra image ``name`` (a negative: empty label file) beside the good one."""

    def run(tmp: Path) -> Result:
        content = data() if callable(data) else data
        source = yolo(tmp, {f"images/{name}": content, f"labels/{Path(name).stem}.txt": ""})
        if stage == "collect":
            result = collect(source, tmp / "raw", images=2, boxes=1, item=name)
            if data is bomb:  # refused on the header, before any pixel is decoded
                report = json.dumps(
                    collect_dataset(
                        options=CollectOptions.from_config(source), out_dir=tmp / "again"
                    )
                )
                assert "exceeds the pixel limit" in report
            return result
        return collect_then_clean(source, tmp, images=2, boxes=1, item=name)

    return run


@functools.cache
def bomb() -> bytes:
    """A 20000×20000 PNG: 400 Mpx in ~50 kB (made on first use: it takes seconds)."""
    return encode(Image.new("1", (20000, 20000)), "PNG")


for _id, _name, _data, _stage, _expected, _given in (
    ("zero-byte-image", "case.jpg", b"", "collect", "dropped: unreadable_image", "0 bytes"),
    (
        "text-named-jpg",
        "case.jpg",
        b"this is not an image\n",
        "collect",
        "dropped: unreadable_image",
        "a text file named .jpg",
    ),
    (
        "decompression-bomb",
        "case.png",
        bomb,
        "collect",
        "dropped: unreadable_image",
        "20000×20000 PNG over `limits.max_pixels` (detail: pixel limit)",
    ),
    (
        "truncated-jpeg",
        "case.jpg",
        encode(noise(3, (256, 256)), "JPEG")[:3000],
        "collect → clean",
        "dropped: unreadable_image",
        "a JPEG cut after 3000 bytes",
    ),
    (
        "png-named-jpg",
        "case.jpg",
        encode(noise(4)),
        "collect → clean",
        "changed: wrong_extension",
        "PNG bytes named .jpg",
    ),  # fmt: skip
    (
        "exif-rotated",
        "case.jpg",
        exif_rotated_jpeg(),
        "collect → clean",
        "changed: exif_rotated",
        "EXIF orientation 6",
    ),  # fmt: skip
    (
        "16-bit-png",
        "case.png",
        encode(Image.fromarray(np.full((30, 40), 40000, np.uint16))),
        "collect → clean",
        "changed: converted_to_rgb",
        "16-bit grayscale PNG",
    ),
    (
        "rgba-png",
        "case.png",
        encode(Image.new("RGBA", (40, 30), (200, 10, 10, 90))),
        "collect → clean",
        "changed: converted_to_rgb",
        "RGBA PNG",
    ),
    (
        "palette-gif",
        "case.gif",
        encode(noise(5).convert("P"), "GIF"),
        "collect → clean",
        "changed: converted_to_rgb",
        "palette GIF",
    ),  # fmt: skip
    (
        "cmyk-jpeg",
        "case.jpg",
        encode(noise(6, mode="CMYK"), "JPEG"),
        "collect → clean",
        "changed: converted_to_rgb",
        "CMYK JPEG",
    ),  # fmt: skip
    (
        "grayscale-jpeg",
        "case.jpg",
        encode(noise(8, mode="L"), "JPEG"),
        "collect → clean",
        "changed: converted_to_rgb",
        "8-bit grayscale JPEG",
    ),  # fmt: skip
    (
        "exact-duplicate",
        "twin.png",
        encode(noise(1)),
        "collect → clean",
        "dropped: exact_duplicate",
        "the good image's pixels again",
    ),  # fmt: skip
):
    case(_id, _stage, f"image: {_given}", _expected)(yolo_image(_name, _data, stage=_stage))


@case(
    "exif-rotated-box",
    "clean",
    "EXIF-rotated JPEG with a box (stored coordinates)",
    "changed: exif_rotated",
)
def _(tmp):
    ds = manifest.new_dataset(class_names=NAMES)
    write(tmp / "raw" / "images" / "r.jpg", exif_rotated_jpeg())
    manifest.add_image(ds, file_name="r.jpg", width=64, height=48, source="r.jpg", group="r")
    manifest.add_box(ds, image_id=1, category_id=1, xywh=[0, 0, 10, 20])
    manifest.save_dataset(ds, tmp / "raw" / "dataset.json", image_dir=tmp / "raw" / "images")
    result = clean(tmp / "raw" / "dataset.json", tmp / "clean", "r.jpg")
    cleaned = manifest.load_dataset(tmp / "clean" / "dataset.json")
    assert (cleaned["images"][0]["width"], cleaned["images"][0]["height"]) == (48, 64)
    assert cleaned["annotations"][0]["bbox"] == [28.0, 0.0, 20.0, 10.0]  # moved with pixels
    return result


@case("truncated-jpeg-repair", "clean", "truncated JPEG, `clean.broken_images=repair`",
      "changed: repaired")  # fmt: skip
def _(tmp):
    truncated = encode(noise(3, (256, 256)), "JPEG")[:3000]
    source = yolo(tmp, {"images/case.jpg": truncated, "labels/case.txt": ""})
    collect(source, tmp / "raw", images=2, boxes=1, item="case")
    return clean(
        tmp / "raw" / "dataset.json", tmp / "clean", "images/case.jpg", broken_images="repair"
    )


@case("clean-pixel-limit", "clean", "a 20000×20000 PNG in the canonical dataset, its box",
      "dropped: too_many_pixels")  # fmt: skip
def _(tmp):
    ds = manifest.new_dataset(class_names=NAMES)
    for name, data in (("good.png", encode(noise(1))), ("bomb.png", bomb())):
        write(tmp / "raw" / "images" / name, data)
        manifest.add_image(ds, file_name=name, width=64, height=48, source=name, group=name)
    manifest.add_box(ds, image_id=2, category_id=1, xywh=[1, 1, 5, 5])  # dropped with it
    manifest.save_dataset(ds, tmp / "raw" / "dataset.json", image_dir=tmp / "raw" / "images")
    return clean(tmp / "raw" / "dataset.json", tmp / "clean", "bomb.png")


# --- boxes in the canonical dataset (clean) -----------------------------------------------


def canonical_box(bbox, category=1):
    def run(tmp: Path) -> Result:
        ds = manifest.new_dataset(class_names=NAMES)
        write(tmp / "raw" / "images" / "a.png", encode(noise(1)))
        write(tmp / "raw" / "images" / "b.png", encode(noise(2)))  # a negative beside it
        manifest.add_image(ds, file_name="a.png", width=64, height=48, source="a.png", group="a")
        manifest.add_image(ds, file_name="b.png", width=64, height=48, source="b.png", group="b")
        manifest.add_box(ds, image_id=1, category_id=1, xywh=[5, 5, 20, 20])
        manifest.add_box(ds, image_id=1, category_id=category, xywh=[0, 0, 1, 1])
        ds["annotations"][-1]["bbox"] = bbox
        text = json.dumps({**ds, "detflow": {"image_dir": "images"}})
        write(tmp / "raw" / "dataset.json", text.replace('"INF"', "1e400"))
        return clean(tmp / "raw" / "dataset.json", tmp / "clean", "a.png")

    return run


for _id, _bbox, _category, _expected, _given in (
    ("box-duplicate", [5.5, 5, 20, 20], 1, "dropped: duplicate_box", "a same-class twin"),
    ("box-other-class-same-place", [5, 5, 20, 20], 2, "kept", "same place, other class"),
    ("box-infinite", ["INF", 0, 4, 4], 1, "incomplete: non_finite", "x = 1e400 (inf)"),
    ("box-zero-width", [10, 10, 0, 8], 1, "dropped: non_positive_size", "zero width"),
    ("box-non-numeric", ["ten", 10, 5, 5], 1, "incomplete: non_numeric", 'x = "ten"'),
    ("box-unknown-category", [5, 5, 20, 20], 9, "incomplete: unknown_class", "category_id 9"),
    ("box-far-outside", [100, 10, 8, 8], 1, "incomplete: out_of_bounds", "x 100 on a 64 px image"),
):
    case(_id, "clean", f"canonical box: {_given}", _expected)(canonical_box(_bbox, _category))
