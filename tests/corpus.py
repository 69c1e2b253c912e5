"""The bad-input corpus: scraped, exported and half-broken inputs, each generated here into a
temporary folder (no binary blobs in the repository) and run through the library function
its stage calls.

A case names its stage, what it feeds and the expected outcome, in one vocabulary:
``kept``; ``changed: <kind>`` (repaired or converted, kept); ``dropped: <reason>`` (the
reason code the stage report lists); ``error: <text>`` (a DetflowError, one line, whose
message holds ``<text>``: the file or key, the problem and the fix). Its runner returns what
happened and the input accounting: per unit (images, boxes, members), how many went in, how
many were kept and how many were dropped; kept + dropped must equal the input.

``python tests/corpus.py`` rewrites the table in docs/reliability.md from these specs
(``tests/test_corpus.py`` checks that it is current).
"""

from __future__ import annotations

import functools
import io
import json
import pickle
import re
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from detflow import manifest
from detflow.augment import augment_dataset
from detflow.checkpoints import read_checkpoint
from detflow.clean import CleanPolicy, clean_dataset
from detflow.collect import collect_dataset
from detflow.config_safety import check_targets
from detflow.errors import DetflowError
from detflow.export import check_export_options, parity_image_count
from detflow.metrics import evaluate_predictions
from detflow.models import build_model
from detflow.optimize import build_variants
from detflow.postprocess import check_postprocess
from detflow.split import split_dataset
from detflow.train_options import TrainOptions

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
DEFAULTS = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
NAMES = ["cat", "dog"]
GOOD_LINE = "0 0.5 0.5 0.25 0.5"  # YOLO cxcywh_norm: a valid cat box


@dataclass
class Result:
    """What a case did: its outcome and ``{unit: (input, kept, dropped)}``."""

    outcome: str
    ledger: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class Case:
    id: str
    stage: str
    given: str
    expected: str
    run: Callable[[Path], Result]


CASES: list[Case] = []


def case(case_id: str, stage: str, given: str, expected: str):
    """Register the decorated ``run(tmp_path) -> Result`` as a corpus case."""

    def register(run):
        CASES.append(Case(case_id, stage, given, expected, run))
        return run

    return register


# --- generated inputs -------------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def noise(seed: int, size=(64, 48), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    return image if mode == "RGB" else image.convert(mode)


def exif_rotated_jpeg() -> bytes:
    """Stored 64×48 with EXIF orientation 6: displayed 48×64 (rotated 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(noise(7), "JPEG", exif=exif.tobytes(), quality=95)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


# --- stage runners ----------------------------------------------------------------------


def _error(exc: DetflowError) -> Result:
    return Result(f"error: {exc}", message=str(exc))


def collect(source: dict, out: Path, *, images: int, boxes: int, item: str, **kw) -> Result:
    """Run collect; the outcome is the first drop whose path contains ``item`` (else kept)."""
    try:
        report = collect_dataset(source=source, out_dir=out, **kw)
    except DetflowError as exc:
        return _error(exc)
    drops = [d for d in report["dropped"] if item in d["path"]]
    dropped = {kind: sum(d["item"] == kind for d in report["dropped"]) for kind in ("image", "box")}
    members = sum(d["item"] == "member" for d in report["dropped"])
    return Result(
        f"dropped: {drops[0]['reason']}" if drops else "kept",
        {
            "images": (images, report["images"], dropped["image"] + members),
            "boxes": (boxes, report["boxes"], dropped["box"]),
        },
    )


def clean(raw_json: Path, out: Path, source: str, **policy) -> Result:
    """Run clean (near-duplicate search off unless asked); the outcome for image ``source``."""
    policy = {"near_duplicate_distance": None, **policy}
    try:
        report = clean_dataset(in_json=raw_json, out_dir=out, policy=CleanPolicy(**policy))
    except DetflowError as exc:
        return _error(exc)
    cleaned = manifest.load_dataset(out / "dataset.json")
    for image in cleaned["images"]:  # every kept image is 8-bit RGB of its recorded size
        with Image.open(out / "images" / image["file_name"]) as opened:
            assert opened.mode == "RGB" and opened.size == (image["width"], image["height"])
    drops = [d for d in report["dropped"] if d["source"] == source]
    changes = next((im.get("changes") for im in cleaned["images"] if im["source"] == source), 0)
    if drops:
        outcome = f"dropped: {drops[0]['reason']}"
    elif changes:
        outcome = f"changed: {changes[0]}"
    elif report["boxes_clipped"]:
        outcome = "changed: clipped"
    else:
        outcome = "kept"
    return Result(
        outcome,
        {
            "images": (report["images_in"], report["images_kept"], report["images_dropped"]),
            "boxes": (report["boxes_in"], report["boxes_kept"], report["boxes_dropped"]),
        },
    )


def collect_then_clean(source: dict, tmp: Path, *, images: int, boxes: int, item: str) -> Result:
    """The case's outcome after collect and clean; both stages' ledgers are checked."""
    first = collect(source, tmp / "raw", images=images, boxes=boxes, item=item)
    if first.outcome != "kept":
        return first
    raw = manifest.load_dataset(tmp / "raw" / "dataset.json")
    name = next(im["source"] for im in raw["images"] if item in im["source"])
    second = clean(tmp / "raw" / "dataset.json", tmp / "clean", name)
    ledger = {f"collect {k}": v for k, v in first.ledger.items()}
    ledger.update({f"clean {k}": v for k, v in second.ledger.items()})
    return Result(second.outcome, ledger, second.message)


def config_error(run: Callable[[], object]) -> Result:
    """Run a builder that must refuse its config; nothing else happens."""
    try:
        run()
    except DetflowError as exc:
        return _error(exc)
    return Result("kept")


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
    ("yolo-too-few-columns", "0 0.5 0.5 0.2", "dropped: bad_columns", "4 columns"),
    ("yolo-too-many-columns", "0 0.5 0.5 0.2 0.2 0.7", "dropped: bad_columns", "6 columns"),
    ("yolo-nan", "0 nan 0.5 0.2 0.2", "dropped: non_finite", "a NaN coordinate"),
    ("yolo-infinite", "0 0.5 inf 0.2 0.2", "dropped: non_finite", "an inf coordinate"),
    ("yolo-non-numeric", "cat 0.5 0.5 0.2 0.2", "dropped: non_numeric", "a class name, not id"),
    ("yolo-class-beyond-list", "7 0.5 0.5 0.2 0.2", "dropped: unknown_class", "class id 7 of 2"),
    ("yolo-negative-class", "-1 0.5 0.5 0.2 0.2", "dropped: unknown_class", "class id -1"),
    ("yolo-negative-size", "0 0.5 0.5 -0.2 0.2", "dropped: non_positive_size", "width < 0"),
    ("yolo-coords-above-1", "0 1.6 0.5 0.2 0.2", "dropped: out_of_bounds", "centre x 1.6"),
    ("yolo-negative-coords", "0 -0.5 0.5 0.2 0.2", "dropped: out_of_bounds", "centre x -0.5"),
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
                report = json.dumps(collect_dataset(source=source, out_dir=tmp / "again"))
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
    source = yolo(tmp, {"images/case.jpg": encode(noise(3, (256, 256)), "JPEG")[:3000]})
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
        manifest.add_image(ds, file_name="a.png", width=64, height=48, source="a.png", group="a")
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
    ("box-infinite", ["INF", 0, 4, 4], 1, "dropped: non_finite", "x = 1e400 (inf)"),
    ("box-zero-width", [10, 10, 0, 8], 1, "dropped: non_positive_size", "zero width"),
    ("box-non-numeric", ["ten", 10, 5, 5], 1, "dropped: non_numeric", 'x = "ten"'),
    ("box-unknown-category", [5, 5, 20, 20], 9, "dropped: unknown_class", "category_id 9"),
    ("box-far-outside", [100, 10, 8, 8], 1, "dropped: out_of_bounds", "x 100 on a 64 px image"),
):
    case(_id, "clean", f"canonical box: {_given}", _expected)(canonical_box(_bbox, _category))


# --- COCO (collect) -----------------------------------------------------------------------


def coco(tmp: Path, images: list, annotations: list, *, drop_key=None) -> dict:
    """A COCO folder: ``instances.json`` and the image files its records name (but
    ``gone*``: a record whose file is missing)."""
    root = tmp / "src"
    for seed, record in enumerate(images):
        if "file_name" in record and not record["file_name"].startswith("gone"):
            write(root / record["file_name"], encode(noise(seed)))
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    data.pop(drop_key, None)
    write(root / "instances.json", json.dumps(data))
    return {"format": "coco", "path": str(root), "annotations": "instances.json"}


IMG_A = {"id": 1, "file_name": "images/a.png", "width": 64, "height": 48}
IMG_B = {"id": 2, "file_name": "images/b.png", "width": 64, "height": 48}
BOX_A = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20]}


def coco_case(images, annotations, *, item, n_images, n_boxes, drop_key=None):
    def run(tmp: Path) -> Result:
        source = coco(tmp, images, annotations, drop_key=drop_key)
        return collect(source, tmp / "raw", images=n_images, boxes=n_boxes, item=item)

    return run


def _box(**changes) -> dict:
    return {**BOX_A, "id": 2, **changes}


for _id, _images, _anns, _item, _expected, _given in (
    ("coco-image-without-file-name", [IMG_A, {"id": 2}], [BOX_A], "#image2",
     "dropped: bad_record", "an image record without file_name"),
    ("coco-dangling-image-id", [IMG_A, IMG_B], [BOX_A, _box(image_id=99)], "#image99",
     "dropped: missing_image", "a box on image_id 99 (no such image)"),
    ("coco-duplicate-image-id", [IMG_A, {**IMG_B, "id": 1}], [BOX_A], "#image1",
     "dropped: duplicate_id", "two images with id 1"),
    ("coco-duplicate-id-missing-file", [IMG_A, {**IMG_B, "id": 1, "file_name": "gone.png"}],
     [BOX_A], "#image1", "dropped: duplicate_id", "two images with id 1, one without a file"),
    ("coco-non-numeric-bbox", [IMG_A, IMG_B], [BOX_A, _box(bbox=["a", 1, 2, 3])], "#annotation2",
     "dropped: bad_box", 'bbox ["a", 1, 2, 3]'),
    ("coco-short-bbox", [IMG_A, IMG_B], [BOX_A, _box(bbox=[1, 2, 3])], "#annotation2",
     "dropped: bad_box", "bbox with 3 numbers"),
    ("coco-box-without-bbox", [IMG_A, IMG_B], [BOX_A, {"id": 2, "image_id": 2, "category_id": 1}],
     "#annotation2", "dropped: bad_box", "an annotation without bbox"),
    ("coco-nan-bbox", [IMG_A, IMG_B], [BOX_A, _box(bbox=["nan", 1, 2, 3])], "#annotation2",
     "dropped: non_finite", 'bbox ["nan", 1, 2, 3]'),
    ("coco-unknown-category", [IMG_A, IMG_B], [BOX_A, _box(category_id=7)], "#annotation2",
     "dropped: unknown_class", "category_id 7"),
    ("coco-crowd-box", [IMG_A, IMG_B], [BOX_A, _box(iscrowd=1)], "#annotation2",
     "dropped: crowd_box", "iscrowd 1"),
):  # fmt: skip
    _n_images = len(_images)
    _n_boxes = len(_anns)
    case(_id, "collect", f"COCO: {_given}", _expected)(
        coco_case(_images, _anns, item=_item, n_images=_n_images, n_boxes=_n_boxes)
    )

case(
    "coco-missing-key",
    "collect",
    "COCO JSON without `annotations`",
    "error: not a COCO instances file",
)(coco_case([IMG_A], [], item="-", n_images=1, n_boxes=0, drop_key="annotations"))


@case("coco-not-json", "collect", "COCO file that is not JSON", "error: not valid JSON")
def _(tmp):
    source = coco(tmp, [IMG_A], [BOX_A])
    write(Path(source["path"]) / "instances.json", "{'images': [")
    return collect(source, tmp / "raw", images=1, boxes=1, item="-")


# --- Pascal VOC (collect) -----------------------------------------------------------------


def voc_xml(filename: str, objects: str = "", size: bool = True, prolog: str = "") -> str:
    dims = "<size><width>64</width><height>48</height><depth>3</depth></size>" if size else ""
    return f"{prolog}<annotation><filename>{filename}</filename>{dims}{objects}</annotation>"


def voc_obj(name="cat", box=(1, 2, 20, 25)) -> str:
    coords = "".join(
        f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
    )
    return f"<object><name>{name}</name><bndbox>{coords}</bndbox></object>"


def voc_case(xml: str, *, item: str, n_boxes: int):
    def run(tmp: Path) -> Result:
        root = tmp / "src"
        write(root / "good.png", encode(noise(1)))
        write(root / "good.xml", voc_xml("good.png", voc_obj()))
        write(root / "case.png", encode(noise(2)))
        write(root / "case.xml", xml)
        source = {"format": "voc", "path": str(root), "names": NAMES}
        result = collect(source, tmp / "raw", images=2, boxes=n_boxes, item=item)
        raw = tmp / "raw" / "dataset.json"
        assert not raw.exists() or "root:" not in raw.read_text()  # no entity was expanded
        return result

    return run


XXE = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
LAUGHS = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
for _id, _xml, _item, _boxes, _expected, _given in (
    ("voc-malformed", "<annotation><filename>case.png</filename><object>", "case", 1,
     "dropped: unparseable_xml", "XML cut mid-element"),
    ("voc-xxe", voc_xml("case.png", "<object><name>&xxe;</name></object>", prolog=XXE), "case.xml",
     1, "dropped: unparseable_xml", "an external entity reading /etc/passwd (defusedxml)"),
    ("voc-entity-expansion", voc_xml("case.png", "&y;", prolog=LAUGHS), "case.xml", 1,
     "dropped: unparseable_xml", "nested entities (billion laughs)"),
    ("voc-missing-size", voc_xml("case.png", voc_obj(), size=False), "case", 2, "kept",
     "no `<size>` tag (size read from the image)"),
    ("voc-non-numeric", voc_xml("case.png", voc_obj(box=("a", 1, 2, 3))), "case", 2,
     "dropped: non_numeric", "`<xmin>a</xmin>`"),
    ("voc-object-without-name", voc_xml("case.png", "<object><bndbox/></object>"), "case", 2,
     "dropped: missing_class", "`<object>` without `<name>`"),
    ("voc-unknown-class", voc_xml("case.png", voc_obj("zebra")), "case", 2,
     "dropped: unknown_class", "class zebra, not in data.names"),
    ("voc-wrong-root", "<notvoc/>", "case.xml", 1, "dropped: unparseable_xml",
     "root element `<notvoc>`"),
):  # fmt: skip
    case(_id, "collect", f"VOC XML: {_given}", _expected)(
        voc_case(_xml, item=_item, n_boxes=_boxes)
    )


# --- CSV (collect, then clean) ------------------------------------------------------------


def csv_case(text: str, *, item: str, n_boxes: int, then_clean=False, **keys):
    def run(tmp: Path) -> Result:
        root = tmp / "src"
        write(root / "a.png", encode(noise(1)))
        write(root / "b.png", encode(noise(2)))
        write(root / "boxes.csv", text)
        source = {"format": "csv", "path": str(root), "csv": "boxes.csv", **keys}
        if then_clean:
            return collect_then_clean(source, tmp, images=2, boxes=n_boxes, item=item)
        return collect(source, tmp / "raw", images=2, boxes=n_boxes, item=item)

    return run


HEADER = "filename,class,xmin,ymin,xmax,ymax\n"
for _id, _text, _item, _boxes, _clean, _keys, _expected, _given in (
    ("csv-columns-reordered", "ymax,xmax,class,filename,ymin,xmin\n25,20,cat,a.png,2,1\n"
     "25,20,dog,b.png,2,1\n", "b.png", 2, True, {}, "kept", "columns in another order"),
    ("csv-swapped-x-columns", HEADER + "a.png,cat,1,2,20,25\nb.png,cat,20,2,1,25\n", "b.png", 2,
     True, {}, "dropped: non_positive_size", "xmin and xmax swapped (xmin > xmax)"),
    ("csv-mapped-columns", "img,label,x1,y1,x2,y2\na.png,cat,1,2,20,25\nb.png,dog,1,2,20,25\n",
     "b.png", 2, True, {"columns": {"filename": "img", "class": "label", "xmin": "x1",
     "ymin": "y1", "xmax": "x2", "ymax": "y2"}}, "kept", "own column names, mapped"),
    ("csv-missing-column", "filename,class,xmin,ymin,xmax\na.png,cat,1,2,20\n", "-", 1, False,
     {}, "error: no column 'ymax'", "no ymax column"),
    ("csv-non-numeric", HEADER + "a.png,cat,1,2,20,25\nb.png,cat,x,2,20,25\n", "boxes.csv:3",
     2, False, {}, "dropped: non_numeric", "xmin = x"),
    ("csv-path-traversal", HEADER + "a.png,cat,1,2,20,25\n../../etc/passwd,cat,1,2,3,4\n",
     "boxes.csv:3", 2, False, {}, "dropped: missing_image", "file name ../../etc/passwd"),
):  # fmt: skip
    case(_id, "collect" + (" → clean" if _clean else ""), f"CSV: {_given}", _expected)(
        csv_case(_text, item=_item, n_boxes=_boxes, then_clean=_clean, **_keys)
    )


# --- archives (collect) ------------------------------------------------------------------


def yolo_members() -> list[tuple[str, bytes]]:
    return [
        ("ds/data.yaml", b"names: [cat, dog]\n"),
        ("ds/images/good.png", encode(noise(1))),
        ("ds/labels/good.txt", GOOD_LINE.encode()),
    ]


def zip_case(name: str, *, symlink=False):
    def run(tmp: Path) -> Result:
        path = tmp / "in.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for member, data in yolo_members():
                archive.writestr(member, data)
            info = zipfile.ZipInfo(name)
            if symlink:
                info.external_attr = (0o120777 << 16) | 0x20
            archive.writestr(info, b"/etc/passwd" if symlink else encode(noise(2)))
        return archive_run(tmp, path, name)

    return run


def tar_case(name: str, kind: bytes):
    def run(tmp: Path) -> Result:
        path = tmp / "in.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for member, data in yolo_members():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else "ds/images/good.png"
            tar.addfile(info)
        return archive_run(tmp, path, name)

    return run


def archive_run(tmp: Path, path: Path, item: str) -> Result:
    before = sorted(p.relative_to(tmp) for p in tmp.rglob("*"))
    source = {"format": "archive", "path": str(path), "contents": {"format": "yolo"}}
    result = collect(source, tmp / "raw", images=2, boxes=1, item=item)
    after = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if "raw" not in p.parts)
    assert after == before  # nothing written outside the output folder
    return result


for _id, _run, _given in (
    ("zip-parent-path", zip_case("ds/images/../../../escaped.png"), "a member `../../../x.png`"),
    ("zip-absolute-path", zip_case("/tmp/detflow-escaped.png"), "a member `/tmp/…png`"),
    ("zip-symlink", zip_case("ds/images/link.png", symlink=True), "a symlink to /etc/passwd"),
    ("tar-symlink", tar_case("ds/images/link.png", tarfile.SYMTYPE), "a symlink to /etc/passwd"),
    ("tar-hardlink", tar_case("ds/images/hard.png", tarfile.LNKTYPE), "a hard link"),
    ("tar-device", tar_case("ds/images/dev.png", tarfile.CHRTYPE), "a character device"),
):
    case(_id, "collect", f"archive: {_given}", "dropped: unsafe_member")(_run)


@case("not-an-archive", "collect", "a .zip that is not one", "error: cannot read the archive")
def _(tmp):
    write(tmp / "x.zip", b"PK garbage")
    source = {"format": "archive", "path": str(tmp / "x.zip"), "contents": {"format": "yolo"}}
    return collect(source, tmp / "raw", images=0, boxes=0, item="-")


# --- configs: wrong type, out of range, unknown names ------------------------------------


def _dataset(tmp: Path) -> Path:
    source = {"format": "synthetic", "num_images": 12, "image_size": 32, "classes": ["circle"]}
    collect_dataset(source={**source, "seed": 3}, out_dir=tmp / "raw")
    return tmp / "raw" / "dataset.json"


def split_config(**changes):
    def run(tmp: Path) -> Result:
        options = {**DEFAULTS["split"], "seed": 0, **changes}
        ratios = {name: options.pop(name) for name in ("train", "val", "test")}
        result = config_error(
            lambda: split_dataset(
                in_json=_dataset(tmp), out_dir=tmp / "split", ratios=ratios, **options
            )
        )
        assert not (tmp / "split").exists()
        return result

    return run


def train_config(**changes):
    return lambda tmp: config_error(
        lambda: TrainOptions.from_config(train={**DEFAULTS["train"], "seed": 0, **changes})
    )


def clean_config(**changes):
    def run(tmp: Path) -> Result:
        policy = {**DEFAULTS["clean"], **changes}
        result = config_error(
            lambda: clean_dataset(
                in_json=_dataset(tmp), out_dir=tmp / "clean", policy=CleanPolicy.from_config(policy)
            )
        )
        assert not (tmp / "clean").exists()
        return result

    return run


AUGMENT = yaml.safe_load((REPO / "conf" / "augment" / "light.yaml").read_text())


def augment_config(max_pixels=100_000_000, **changes):
    def run(tmp: Path) -> Result:
        options = {**AUGMENT, **changes}
        return config_error(
            lambda: augment_dataset(
                train_json=_dataset(tmp),
                out_dir=tmp / "aug",
                transforms=options["transforms"],
                copies=options["copies"],
                min_visibility=options["min_visibility"],
                min_area=options["min_area"],
                seed=0,
                max_pixels=max_pixels,
            )
        )

    return run


def collect_config(max_pixels=100_000_000, **source):
    return lambda tmp: collect(
        {"format": "synthetic", "num_images": 2, "image_size": 32, **source},
        tmp / "raw",
        images=2,
        boxes=0,
        item="-",
        max_pixels=max_pixels,
    )


def optimize_config(variants):
    def run(tmp: Path) -> Result:
        write(tmp / "m.onnx", b"")
        return config_error(
            lambda: build_variants(
                onnx_path=tmp / "m.onnx", out_dir=tmp / "opt", variants=variants, calibration=[]
            )
        )

    return run


def model_group(tmp: Path) -> Result:
    """``-S model=…`` of an option conf/model does not have: Hydra lists the options."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException

    try:
        with initialize_config_dir(str(REPO / "conf"), version_base=None):
            compose(config_name="config", overrides=["model=yolov99"])
    except MissingConfigException as exc:
        options = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
        assert all(option in str(exc) for option in options)  # the allowed values
        return Result(f"error: {str(exc).splitlines()[0]}", message=str(exc).splitlines()[0])
    return Result("kept")


for _id, _stage, _run, _given, _expected in (
    ("split-negative-ratio", "split", split_config(train=1.1, val=-0.1, test=0.0),
     "`split.val=-0.1`", "error: split.val=-0.1 must be a number >= 0"),
    ("split-ratios-not-summing-to-1", "split", split_config(train=0.9),
     "`split.train=0.9` (sum 1.2)", "error: they must sum to 1"),
    ("split-ratio-wrong-type", "split", split_config(train="most"), "`split.train=most`",
     "error: split.train='most' must be a number"),
    ("split-unknown-mode", "split", split_config(mode="stratified"), "`split.mode=stratified`",
     "error: split.mode='stratified' is not allowed; use one of: random, predefined, kfold"),
    ("split-fold-out-of-range", "split", split_config(mode="kfold", fold=7), "`split.fold=7` of 5",
     "error: split.fold=7 must be an integer in 0..4"),
    ("model-unknown-name", "train", lambda tmp: config_error(
        lambda: build_model(name="yolov99", num_classes=2)), "`model.name=yolov99`",
     "error: model.name='yolov99' is not allowed; use one of: fasterrcnn_mobilenet_v2"),
    ("model-unknown-group-option", "train", model_group, "`-S model=yolov99` (no conf/model/"
     "yolov99.yaml)", "error: Could not find 'model/yolov99'"),
    ("train-epochs-wrong-type", "train", train_config(epochs="ten"), "`train.epochs=ten`",
     "error: train.epochs='ten' must be an integer > 0"),
    ("train-negative-lr", "train", train_config(lr=-0.01), "`train.lr=-0.01`",
     "error: train.lr=-0.01 must be a number > 0"),
    ("train-unknown-optimizer", "train", train_config(optimizer="rmsprop"),
     "`train.optimizer=rmsprop`", "error: train.optimizer='rmsprop' is not allowed; use one of"),
    ("clean-unknown-resize", "clean", clean_config(resize="crop"), "`clean.resize=crop`",
     "error: clean.resize='crop' is not allowed; use one of: none, stretch, fit, letterbox"),
    ("clean-wrong-type", "clean", clean_config(min_box_px="big"), "`clean.min_box_px=big`",
     "error: clean.min_box_px='big' must be a number >= 0"),
    ("clean-unknown-key", "clean", clean_config(min_box=2), "`clean.min_box=2` (typo)",
     "error: clean.min_box is not a clean option; allowed:"),
    ("augment-unknown-transform", "augment", augment_config(transforms=[{"name": "Explode"}]),
     "transform `Explode`", "error: augment.transforms[0].name='Explode' is not an "
     "albumentations transform"),
    ("augment-visibility-out-of-range", "augment", augment_config(min_visibility=2),
     "`augment.min_visibility=2`", "error: augment.min_visibility=2 must be in [0, 1]"),
    ("augment-negative-copies", "augment", augment_config(copies=-1), "`augment.copies=-1`",
     "error: augment.copies=-1 must be a number >= 0"),
    ("limits-max-pixels-wrong-type", "augment", augment_config(max_pixels="huge"),
     "`limits.max_pixels=huge`", "error: limits.max_pixels='huge' must be an integer > 0"),
    ("limits-max-pixels-negative", "collect", collect_config(max_pixels=-5),
     "`limits.max_pixels=-5`", "error: limits.max_pixels=-5 must be an integer > 0"),
    ("data-unknown-format", "collect", collect_config(format="parquet"), "`data.format=parquet`",
     "error: data.format='parquet' is not allowed; use one of: yolo, coco, voc"),
    ("data-unknown-key", "collect", collect_config(num_imgs=3), "`data.num_imgs=3` (typo)",
     "error: data.num_imgs is not a key of format 'synthetic'; allowed keys:"),
    ("optimize-unknown-variant", "optimize", optimize_config(["ort_fp32", "int4"]),
     "`optimize.variants=[ort_fp32, int4]`", "error: optimize.variants='int4' is not allowed"),
    ("postprocess-unknown-nms", "evaluate", lambda tmp: config_error(
        lambda: check_postprocess({**DEFAULTS["postprocess"], "nms": "greedy"})),
     "`postprocess.nms=greedy`",
     "error: postprocess.nms='greedy' is not allowed; use one of: class_aware, class_agnostic"),
    ("evaluate-iou-above-1", "evaluate", lambda tmp: config_error(
        lambda: evaluate_predictions(manifest.new_dataset(class_names=NAMES), {},
                                     score_threshold=0.5, iou=1.5)),
     "`evaluate.iou=1.5`", "error: evaluate.iou=1.5 must be in (0, 1]"),
    ("export-parity-images-wrong-type", "export", lambda tmp: config_error(
        lambda: parity_image_count("all", 8)), "`export.parity_images=all`",
     "error: export.parity_images='all' must be an integer > 0"),
    ("export-opset-too-old", "export", lambda tmp: config_error(
        lambda: check_export_options(opset=9, max_box_error_px=1.0, max_score_error=0.001)),
     "`export.opset=9`", "error: export.opset=9 must be an ONNX opset >= 11"),
    ("export-negative-tolerance", "export", lambda tmp: config_error(
        lambda: check_export_options(opset=17, max_box_error_px=-1, max_score_error=0.001)),
     "`export.max_box_error_px=-1`", "error: export.max_box_error_px=-1 must be a number >= 0"),
    ("postprocess-iou-above-1", "evaluate", lambda tmp: config_error(
        lambda: check_postprocess({**DEFAULTS["postprocess"], "nms_iou": 1.5})),
     "`postprocess.nms_iou=1.5`",
     "error: postprocess.nms_iou=1.5 must be <= 1"),
):  # fmt: skip
    case(_id, _stage, f"config: {_given}", _expected)(_run)


# --- security: checkpoints and instantiation targets ---------------------------------------


class Exploit:
    """A pickled object that would run code when unpickled without ``weights_only``."""

    def __reduce__(self):
        return (print, ("unpickled: arbitrary code ran",))


@case("checkpoint-pickled-object", "evaluate / export", "a `best.pt` holding a pickled object",
      "error: not a loadable checkpoint")  # fmt: skip
def _(tmp):
    torch.save({"schema": "detflow-checkpoint-v1", "model": Exploit()}, tmp / "best.pt")
    return config_error(lambda: read_checkpoint(tmp / "best.pt"))


@case("checkpoint-pickle-not-torch", "evaluate / export", "a plain pickle named `best.pt`",
      "error: not a loadable checkpoint")  # fmt: skip
def _(tmp):
    write(tmp / "best.pt", pickle.dumps(Exploit(), protocol=2))
    return config_error(lambda: read_checkpoint(tmp / "best.pt"))


@case("checkpoint-truncated", "evaluate / export", "a `best.pt` cut in half",
      "error: not a loadable checkpoint")  # fmt: skip
def _(tmp):
    torch.save({"schema": "detflow-checkpoint-v1", "w": torch.zeros(100)}, tmp / "full.pt")
    write(tmp / "best.pt", (tmp / "full.pt").read_bytes()[:300])
    return config_error(lambda: read_checkpoint(tmp / "best.pt"))


@case("target-outside-project", "every stage", "`model.head._target_: os.system`",
      "error: model.head._target_='os.system' is not allowed")  # fmt: skip
def _(tmp):
    config = {k: v for k, v in DEFAULTS.items() if k != "hydra"}  # what a stage gets
    config["model"] = {"name": "x", "head": {"_target_": "os.system"}}
    return config_error(lambda: check_targets(config))


@case("target-inside-project", "every stage", "`_target_: torchvision.ops.nms` in a list",
      "kept")  # fmt: skip
def _(tmp):
    return config_error(lambda: check_targets({"a": [{"_target_": "torchvision.ops.nms"}]}))


# --- the table in docs/reliability.md -----------------------------------------------------

BEGIN, END = "<!-- corpus table: begin -->", "<!-- corpus table: end -->"


def table() -> str:
    rows = ["| case | stage | input | expected outcome |", "|---|---|---|---|"]
    for item in CASES:
        given = item.given.replace("|", "\\|")
        rows.append(f"| `{item.id}` | {item.stage} | {given} | {item.expected} |")
    return "\n".join(rows)


def document(text: str) -> str:
    """``text`` (docs/reliability.md) with the table between the markers regenerated."""
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{BEGIN}\n{table()}\n{END}", text)


if __name__ == "__main__":
    DOC.write_text(document(DOC.read_text()))
    print(f"{DOC}: {len(CASES)} cases")
