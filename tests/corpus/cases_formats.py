"""Corpus cases: COCO, Pascal VOC, CSV and archive sources (collect)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

from corpus.runner import (
    GOOD_LINE,
    NAMES,
    Result,
    collect,
    collect_then_clean,
    encode,
    noise,
    registry,
    write,
)

CASES, case = registry()

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
     "incomplete: bad_box", 'bbox ["a", 1, 2, 3]'),
    ("coco-short-bbox", [IMG_A, IMG_B], [BOX_A, _box(bbox=[1, 2, 3])], "#annotation2",
     "incomplete: bad_box", "bbox with 3 numbers"),
    ("coco-box-without-bbox", [IMG_A, IMG_B], [BOX_A, {"id": 2, "image_id": 2, "category_id": 1}],
     "#annotation2", "incomplete: bad_box", "an annotation without bbox"),
    ("coco-nan-bbox", [IMG_A, IMG_B], [BOX_A, _box(bbox=["nan", 1, 2, 3])], "#annotation2",
     "incomplete: non_finite", 'bbox ["nan", 1, 2, 3]'),
    ("coco-unknown-category", [IMG_A, IMG_B], [BOX_A, _box(category_id=7)], "#annotation2",
     "incomplete: unknown_class", "category_id 7"),
    ("coco-crowd-box", [IMG_A, IMG_B], [BOX_A, _box(iscrowd=1)], "#annotation2",
     "kept", "iscrowd 1 (kept, marked crowd: evaluation ignores it)"),
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
     "incomplete: non_numeric", "`<xmin>a</xmin>`"),
    ("voc-object-without-name", voc_xml("case.png", "<object><bndbox/></object>"), "case", 2,
     "incomplete: missing_class", "`<object>` without `<name>`"),
    ("voc-unknown-class", voc_xml("case.png", voc_obj("zebra")), "case", 2,
     "dropped: class_not_selected", "class zebra, not in data.names (on purpose: complete)"),
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
     2, False, {}, "incomplete: non_numeric", "xmin = x"),
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
