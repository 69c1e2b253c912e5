"""Corpus cases: label files as annotation tools write them (YOLO segmentation rows, COCO
segmentations, BOMs, UTF-16, CRLF, tabs, CSV headers), ambiguities, declared image sizes,
incomplete images and VOC difficult / COCO crowd boxes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import yaml
from pycocotools import mask as mask_utils

from detflow.data import manifest

from corpus.cases_formats import BOX_A, IMG_A, IMG_B, coco, voc_obj, voc_xml, yolo_members
from corpus.cases_images import yolo
from corpus.runner import (
    GOOD_LINE,
    NAMES,
    Result,
    collect,
    collect_then_clean,
    encode,
    exif_rotated_jpeg,
    noise,
    registry,
    write,
)

CASES, case = registry()

POLYGON = "0 0.2 0.2 0.6 0.25 0.5 0.8"  # a cat triangle: extent x 0.2..0.6, y 0.2..0.8

# --- YOLO text as tools write it (collect, then clean) -----------------------------------


def yolo_text(data: bytes | str, *, boxes: int, item: str = "case", **policy):
    def run(tmp: Path) -> Result:
        source = yolo(tmp, {"images/case.png": encode(noise(2)), "labels/case.txt": data})
        return collect_then_clean(source, tmp, images=2, boxes=boxes, item=item, **policy)

    return run


for _id, _data, _boxes, _expected, _given in (
    ("yolo-polygon-row", POLYGON + "\n", 2, "changed: polygon_to_box",
     "a segmentation row (class + 3 x y points)"),
    ("yolo-mixed-box-polygon", f"{GOOD_LINE}\n{POLYGON}\n", 3, "changed: polygon_to_box",
     "a box row and a polygon row in one file"),
    ("yolo-bom-crlf-tabs", ("\ufeff" + GOOD_LINE.replace(" ", "\t") + "  \r\n\r\n").encode(), 2,
     "kept", "UTF-8 with a BOM, CRLF line ends, tabs, trailing blanks, a blank line"),
    ("yolo-cr-line-ends", f"{GOOD_LINE}\r1   0.3 0.3 0.2 0.2\r", 3, "kept",
     "old-Mac CR line ends and runs of spaces"),
    ("yolo-utf16", (GOOD_LINE + "\r\n").encode("utf-16"), 2, "kept",
     "a UTF-16 label file (with its BOM)"),
    ("yolo-latin1-bytes", b"0 0.5 0.5 0.2 0.2\n\xe9\xff\n", 1, "incomplete: unreadable_label",
     "a label file that is neither UTF-8 nor UTF-16"),
    ("yolo-odd-point-count", "0 0.1 0.1 0.5 0.1 0.5\n", 2, "incomplete: bad_columns",
     "a polygon row with an odd coordinate (6 columns)"),
):  # fmt: skip
    case(_id, "collect → clean", f"YOLO label: {_given}", _expected)(yolo_text(_data, boxes=_boxes))


@case("yolo-no-label-file", "collect → clean", "YOLO: an image without its label file",
      "incomplete: no_label")  # fmt: skip
def _(tmp):
    source = yolo(tmp, {"images/case.png": encode(noise(2))})
    return collect_then_clean(source, tmp, images=2, boxes=1, item="case")


@case(
    "incomplete-kept",
    "collect → clean",
    "YOLO: a bad line, `clean.incomplete_images=keep` (kept, marked, counted)",
    "incomplete: bad_columns",
)
def _(tmp):
    files = {"images/case.png": encode(noise(2)), "labels/case.txt": f"{GOOD_LINE}\n0 0.5\n"}
    result = collect_then_clean(
        yolo(tmp, files), tmp, images=2, boxes=3, item="case", incomplete_images="keep"
    )
    cleaned = manifest.load_dataset(tmp / "clean" / "dataset.json")
    assert [im["source"] for im in cleaned["images"] if im.get("incomplete")] == ["images/case.png"]
    assert result.ledger["clean images"] == (2, 1, 0, 1)
    return result


@case("yolo-shared-label-stem", "collect", "YOLO: `case.jpg` and `case.png` share `case.txt`",
      "dropped: ambiguous_label")  # fmt: skip
def _(tmp):
    files = {
        "images/case.png": encode(noise(2)),
        "images/case.jpg": encode(noise(3), "JPEG"),
        "labels/case.txt": GOOD_LINE,
    }
    result = collect(yolo(tmp, files), tmp / "raw", images=3, boxes=1, item="case")
    assert result.ledger["images"] == (3, 1, 2, 0)  # both dropped, the reason names the other
    return result


@case("yolo-duplicate-names", "collect", "YOLO data.yaml: `names: [cat, dog, cat]`",
      "error: lists a class name more than once ('cat' has ids 0, 2)")  # fmt: skip
def _(tmp):
    source = yolo(tmp, {}, names=["cat", "dog", "cat"])
    return collect(source, tmp / "raw", images=1, boxes=1, item="case")


@case("yolo-names-mapping", "collect → clean",
      "YOLO data.yaml: `names: {0: cat, 2: dog}` (a mapping with a gap), a class-2 row",
      "kept")  # fmt: skip
def _(tmp):
    files = {"images/case.png": encode(noise(2)), "labels/case.txt": "2 0.5 0.5 0.2 0.2\n"}
    source = yolo(tmp, files)
    write(Path(source["path"]) / "data.yaml", yaml.safe_dump({"names": {0: "cat", 2: "dog"}}))
    result = collect_then_clean(source, tmp, images=2, boxes=2, item="case")
    raw = manifest.load_dataset(tmp / "raw" / "dataset.json")
    assert manifest.class_names(raw) == ["cat", "dog"]
    assert sorted(a["category_id"] for a in raw["annotations"]) == [1, 2]
    return result


@case("yolo-names-subset", "collect", "YOLO data.yaml `[cat, dog]`, `data.names=[dog]`, a cat row",
      "dropped: class_not_selected")  # fmt: skip
def _(tmp):
    files = {
        "images/case.png": encode(noise(2)),
        "labels/case.txt": f"{GOOD_LINE}\n1 0.5 0.5 0.2 0.2\n",
    }
    source = {**yolo(tmp, files), "names": ["dog"]}
    result = collect(source, tmp / "raw", images=2, boxes=3, item="case")
    assert result.ledger["images"] == (2, 2, 0, 0)  # on purpose: the image stays complete
    raw = manifest.load_dataset(tmp / "raw" / "dataset.json")
    assert manifest.class_names(raw) == ["dog"] and len(raw["annotations"]) == 1
    return result


@case("class-map-null", "collect", "YOLO + `data.class_map={dog: null}` on a dog row",
      "dropped: class_dropped")  # fmt: skip
def _(tmp):
    files = {"images/case.png": encode(noise(2)), "labels/case.txt": "1 0.5 0.5 0.2 0.2\n"}
    source = {**yolo(tmp, files), "class_map": {"dog": None}}
    result = collect(source, tmp / "raw", images=2, boxes=2, item="case")
    assert result.ledger["images"] == (2, 2, 0, 0)  # on purpose: the image stays complete
    return result


# --- COCO segmentations and declared sizes (collect) --------------------------------------


def _rle(compressed: bool) -> dict:
    mask = np.zeros((48, 64), dtype=np.uint8, order="F")
    mask[10:30, 5:25] = 1  # x 5..25, y 10..30
    rle = mask_utils.encode(mask)
    if compressed:
        return {"size": rle["size"], "counts": rle["counts"].decode()}
    flat = mask.flatten(order="F")
    runs, value, count = [], 0, 0
    for pixel in flat:
        if pixel == value:
            count += 1
        else:
            runs.append(count)
            value, count = pixel, 1
    runs.append(count)
    return {"size": [48, 64], "counts": runs}


def coco_segmentation(annotation: dict, *, expected_box, image=IMG_B, item="#annotation2"):
    def run(tmp: Path) -> Result:
        source = coco(tmp, [IMG_A, image], [BOX_A, {"id": 2, "image_id": 2, **annotation}])
        result = collect(source, tmp / "raw", images=2, boxes=2, item=item)
        if expected_box is not None:
            raw = manifest.load_dataset(tmp / "raw" / "dataset.json")
            assert raw["annotations"][-1]["bbox"] == expected_box
        return result

    return run


for _id, _ann, _box, _image, _item, _expected, _given in (
    ("coco-polygon-without-bbox",
     {"category_id": 1, "bbox": [], "segmentation": [[5, 10, 25, 10, 25, 30, 5, 30]]},
     [5.0, 10.0, 20.0, 20.0], IMG_B, "#annotation2", "changed: polygon_to_box",
     "`bbox: []`, a polygon segmentation"),
    ("coco-rle-without-bbox", {"category_id": 1, "segmentation": _rle(True)},
     [5.0, 10.0, 20.0, 20.0], IMG_B, "#annotation2", "changed: mask_to_box",
     "no bbox, a compressed RLE segmentation"),
    ("coco-uncompressed-rle", {"category_id": 1, "segmentation": _rle(False)},
     [5.0, 10.0, 20.0, 20.0], IMG_B, "#annotation2", "changed: mask_to_box",
     "no bbox, an uncompressed RLE segmentation"),
    ("coco-declared-size-rescaled", {"category_id": 1, "bbox": [10, 10, 40, 20]},
     [5.0, 5.0, 20.0, 10.0], {**IMG_B, "width": 128, "height": 96}, "#image2",
     "changed: rescaled_boxes",
     "declared 128×96 for a 64×48 file (a uniform rescale)"),
    ("coco-declared-size-mismatch", {"category_id": 1, "bbox": [5, 5, 10, 10]}, None,
     {**IMG_B, "width": 64, "height": 64}, "#image2", "incomplete: size_mismatch",
     "declared 64×64 for a 64×48 file"),
):  # fmt: skip
    case(_id, "collect", f"COCO: {_given}", _expected)(
        coco_segmentation(_ann, expected_box=_box, image=_image, item=_item)
    )


@case("coco-two-records-one-file", "collect", "COCO: image ids 2 and 3 both name `b.png`",
      "dropped: ambiguous_label")  # fmt: skip
def _(tmp):
    third = {**IMG_B, "id": 3}
    boxes = [BOX_A, {**BOX_A, "id": 2, "image_id": 2}]
    source = coco(tmp, [IMG_A, IMG_B, third], boxes)
    result = collect(source, tmp / "raw", images=3, boxes=2, item="#image2")
    assert result.ledger["images"] == (3, 1, 2, 0)  # both records dropped, their box too
    return result


@case("coco-crowd-dropped-on-request", "collect", "COCO: iscrowd 1, `data.difficult=drop`",
      "dropped: difficult_dropped")  # fmt: skip
def _(tmp):
    crowd = {**BOX_A, "id": 2, "image_id": 2, "iscrowd": 1}
    source = {**coco(tmp, [IMG_A, IMG_B], [BOX_A, crowd]), "difficult": "drop"}
    result = collect(source, tmp / "raw", images=2, boxes=2, item="#box1")
    assert result.ledger["images"] == (2, 2, 0, 0)  # on purpose: the image stays complete
    return result


# --- VOC declared size and difficult (collect) ---------------------------------------------


def voc_two(tmp: Path, xml: str, **keys) -> dict:
    root = tmp / "src"
    write(root / "good.png", encode(noise(1)))
    write(root / "good.xml", voc_xml("good.png", voc_obj()))
    write(root / "case.png", encode(noise(2)))
    write(root / "case.xml", xml)
    return {"format": "voc", "path": str(root), "names": NAMES, **keys}


def voc_size(width: int, height: int) -> str:
    """A VOC XML declaring ``width``×``height`` for case.png, one box (2, 4, 20, 15)."""
    dims = f"<size><width>{width}</width><height>{height}</height></size>"
    box = voc_obj(box=(2, 4, 20, 15))
    return f"<annotation><filename>case.png</filename>{dims}{box}</annotation>"


@case(
    "voc-two-xml-one-image",
    "collect",
    "VOC XML: `case.xml` and `other.xml` both name `case.png`",
    "dropped: ambiguous_label",
)
def _(tmp):
    source = voc_two(tmp, voc_xml("case.png", voc_obj()))
    write(Path(source["path"]) / "other.xml", voc_xml("case.png", voc_obj("dog")))
    result = collect(source, tmp / "raw", images=2, boxes=1, item="case.png")
    assert result.ledger["images"] == (2, 1, 1, 0)
    return result


@case("voc-size-rescaled", "collect", "VOC XML: `<size>` 32×24 for a 64×48 file",
      "changed: rescaled_boxes")  # fmt: skip
def _(tmp):
    result = collect(voc_two(tmp, voc_size(32, 24)), tmp / "raw", images=2, boxes=2, item="case")
    raw = manifest.load_dataset(tmp / "raw" / "dataset.json")
    case_id = next(im["id"] for im in raw["images"] if im["source"] == "case.png")
    bbox = next(a["bbox"] for a in raw["annotations"] if a["image_id"] == case_id)
    assert bbox == [4.0, 8.0, 36.0, 22.0]  # (2, 4, 20, 15) × 2
    return result


@case("voc-size-mismatch", "collect → clean", "VOC XML: `<size>` 48×64 for a 64×48 file",
      "incomplete: size_mismatch")  # fmt: skip
def _(tmp):
    return collect_then_clean(voc_two(tmp, voc_size(48, 64)), tmp, images=2, boxes=2, item="case")


@case(
    "voc-size-of-rotated-view",
    "collect → clean",
    "VOC XML: `<size>` 48×64 for a 64×48 JPEG stored sideways (EXIF 6), box on the view",
    "changed: boxes_to_stored_orientation",
)
def _(tmp):
    root = tmp / "src"
    write(root / "good.png", encode(noise(1)))
    write(root / "good.xml", voc_xml("good.png", voc_obj()))
    write(root / "case.jpg", exif_rotated_jpeg())
    dims = "<size><width>48</width><height>64</height></size>"
    write(root / "case.xml", f"<annotation><filename>case.jpg</filename>{dims}"
          f"{voc_obj(box=(28, 0, 48, 10))}</annotation>")  # fmt: skip
    source = {"format": "voc", "path": str(root), "names": NAMES}
    result = collect_then_clean(source, tmp, images=2, boxes=2, item="case")
    cleaned = manifest.load_dataset(tmp / "clean" / "dataset.json")
    case_id = next(im["id"] for im in cleaned["images"] if im["source"] == "case.jpg")
    bbox = next(a["bbox"] for a in cleaned["annotations"] if a["image_id"] == case_id)
    assert bbox == [28.0, 0.0, 20.0, 10.0]  # where it was drawn, on the upright image
    return result


DIFFICULT = "<object><name>cat</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>20</xmax><ymax>25</ymax></bndbox></object>"  # noqa: E501


@case("voc-difficult", "collect → clean",
      "VOC XML: `<difficult>1</difficult>` (kept, marked: evaluation ignores it)",
      "kept")  # fmt: skip
def _(tmp):
    source = voc_two(tmp, voc_xml("case.png", DIFFICULT))
    result = collect_then_clean(source, tmp, images=2, boxes=2, item="case")
    cleaned = manifest.load_dataset(tmp / "clean" / "dataset.json")
    assert sorted(a.get("ignore", "") for a in cleaned["annotations"]) == ["", "difficult"]
    return result


@case("voc-difficult-keep", "collect", "VOC XML: difficult, `data.difficult=keep`", "kept")
def _(tmp):
    source = voc_two(tmp, voc_xml("case.png", DIFFICULT), difficult="keep")
    result = collect(source, tmp / "raw", images=2, boxes=2, item="case")
    raw = manifest.load_dataset(tmp / "raw" / "dataset.json")
    assert not any(manifest.is_ignored(a) for a in raw["annotations"])  # ordinary boxes
    return result


# --- CSV as tools write it ------------------------------------------------------------------


def csv_two(text: str | bytes, *, item: str, boxes: int, then_clean: bool = True):
    def run(tmp: Path) -> Result:
        root = tmp / "src"
        write(root / "a.png", encode(noise(1)))
        write(root / "b.png", encode(noise(2)))
        write(root / "boxes.csv", text)
        source = {"format": "csv", "path": str(root), "csv": "boxes.csv"}
        if then_clean:
            return collect_then_clean(source, tmp, images=2, boxes=boxes, item=item)
        return collect(source, tmp / "raw", images=2, boxes=boxes, item=item)

    return run


ROWS = "a.png,cat,1,2,20,25\nb.png,dog,1,2,20,25\n"
for _id, _text, _item, _expected, _given in (
    ("csv-header-spaces-case", " Filename , CLASS,Xmin ,ymin,XMAX,ymax\n" + ROWS, "b.png", "kept",
     "header ` Filename , CLASS,Xmin ,…` (spaces, case)"),
    ("csv-utf16-crlf", ("filename,class,xmin,ymin,xmax,ymax\n" + ROWS).replace("\n", "\r\n")
     .encode("utf-16"), "b.png", "kept", "UTF-16 with a BOM, CRLF line ends"),
    ("csv-size-columns-mismatch",
     "filename,width,height,class,xmin,ymin,xmax,ymax\na.png,64,48,cat,1,2,20,25\n"
     "b.png,100,48,dog,1,2,20,25\n", "b.png", "incomplete: size_mismatch",
     "width/height columns: 100×48 for a 64×48 file"),
):  # fmt: skip
    case(_id, "collect → clean", f"CSV: {_given}", _expected)(csv_two(_text, item=_item, boxes=2))


@case("archive-incomplete", "collect", "archive: a YOLO dataset with a bad label line",
      "incomplete: bad_columns")  # fmt: skip
def _(tmp):
    path = tmp / "in.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in yolo_members():
            archive.writestr(member, data)
        archive.writestr("ds/images/case.png", encode(noise(2)))
        archive.writestr("ds/labels/case.txt", "0 0.5\n")
    source = {"format": "archive", "path": str(path), "contents": {"format": "yolo"}}
    result = collect(source, tmp / "raw", images=2, boxes=2, item="case")
    raw = manifest.load_dataset(tmp / "raw" / "dataset.json")
    reasons = [r for im in raw["images"] for r in im.get("incomplete", [])]
    assert reasons == ["ds/labels/case.txt:1: bad_columns"]  # named as inside the archive
    return result
