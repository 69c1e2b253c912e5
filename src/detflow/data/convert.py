"""Convert a canonical dataset (COCO ``xywh`` pixel boxes) to YOLO, COCO or Pascal VOC, for
labelling or training elsewhere.

- YOLO: ``images/`` + ``labels/`` (``class cx cy w h``, YOLO ``cxcywh_norm``), or
  ``{train,val,test}/images|labels`` when images carry a split; ``data.yaml`` names classes.
- COCO: ``annotations.json`` (``bbox`` COCO ``xywh`` pixels, category ids ``1..N``) + ``images/``.
- VOC: ``Annotations/*.xml`` (``bndbox`` ``xyxy`` pixels, as stored, no 1-based shift) +
  ``JPEGImages/``.

Images are named after their source file where possible (unique per output). Negatives get an
empty label file (YOLO) or an XML without objects (VOC); images marked ``labelled: false``
get no label file, so a labelling tool sees them as still to do.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from xml.etree.ElementTree import Element, ElementTree, SubElement, indent

import yaml

from detflow.core.boxes import xywh_to_xyxy, xyxy_to_yolo
from detflow.core.errors import require_choice
from detflow.core.files import atomic_dir, write_json
from detflow.data import manifest

TARGETS = ("yolo", "coco", "voc")


def convert_dataset(
    *, dataset_json: str | Path, out_dir: str | Path, to: str, link: bool = False
) -> dict:
    """Write ``dataset_json`` in format ``to`` into ``out_dir`` (replaced atomically).

    Returns counts: images, boxes, label files written.
    """
    require_choice("--to", to, TARGETS)
    dataset = manifest.load_dataset(dataset_json)
    src_dir = manifest.image_dir(dataset_json, dataset)
    names = _output_names(dataset)
    writer = {"yolo": _write_yolo, "coco": _write_coco, "voc": _write_voc}[to]

    def place(image: dict, target: Path) -> None:
        _place(src_dir, image, target, link)

    with atomic_dir(out_dir) as tmp:
        labels = writer(dataset, names, tmp, place)
    return {
        "format": to,
        "images": len(dataset["images"]),
        "boxes": len(dataset["annotations"]),
        "label_files": labels,
    }


def _place(src_dir: Path, image: dict, target: Path, link: bool) -> None:
    source = src_dir / image["file_name"]
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


def _output_names(dataset: dict) -> dict[int, str]:
    """Image id → a unique file name from the source's base name and the stored suffix."""
    used: set[str] = set()
    names = {}
    for image in dataset["images"]:
        suffix = Path(image["file_name"]).suffix
        base = str(image.get("source") or image["file_name"]).rsplit("/", 1)[-1]
        stem = base[: -len(suffix)] if suffix and base.lower().endswith(suffix.lower()) else base
        stem = re.sub(r"[^\w .,()+-]", "_", stem).strip(" .") or f"image{image['id']}"
        if stem.lower() in used:
            stem = f"{stem}_{image['id']}"
        used.add(stem.lower())
        names[image["id"]] = stem + suffix
    return names


def _number(value: float) -> str:
    """Shortest faithful text: integers without a point, others to 10 decimals."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return f"{value:.10f}".rstrip("0").rstrip(".")


def _labelled(image: dict) -> bool:
    return image.get("labelled", True) is not False


def _write_yolo(dataset: dict, names: dict, out: Path, place) -> int:
    boxes_of = manifest.annotations_by_image(dataset)
    splits = sorted({im["split"] for im in dataset["images"] if im.get("split")})
    written = 0
    for image in dataset["images"]:
        folder = out / image["split"] if image.get("split") else out
        place(image, folder / "images" / names[image["id"]])
        if not _labelled(image):
            continue
        anns = boxes_of.get(image["id"], [])
        xyxy = xywh_to_xyxy([a["bbox"] for a in anns])
        yolo = xyxy_to_yolo(xyxy, width=image["width"], height=image["height"])
        lines = [
            " ".join([str(a["category_id"] - 1), *(_number(v) for v in row)])
            for a, row in zip(anns, yolo, strict=True)
        ]
        label = folder / "labels" / (Path(names[image["id"]]).stem + ".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        written += 1
    meta = {"nc": len(dataset["categories"]), "names": manifest.class_names(dataset)}
    meta.update({s: f"{s}/images" for s in splits})
    (out / "data.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    return written


def _write_coco(dataset: dict, names: dict, out: Path, place) -> int:
    images = []
    for image in dataset["images"]:
        place(image, out / "images" / names[image["id"]])
        images.append({**image, "file_name": names[image["id"]]})
    coco = {
        "info": dataset.get("info", {}),
        "categories": [dict(c, supercategory="none") for c in dataset["categories"]],
        "images": images,
        "annotations": dataset["annotations"],
    }
    write_json(out / "annotations.json", coco)
    return 1


def _write_voc(dataset: dict, names: dict, out: Path, place) -> int:
    boxes_of = manifest.annotations_by_image(dataset)
    class_names = manifest.class_names(dataset)
    (out / "Annotations").mkdir()
    written = 0
    for image in dataset["images"]:
        name = names[image["id"]]
        place(image, out / "JPEGImages" / name)
        if not _labelled(image):
            continue
        tree = _voc_xml(image, name, boxes_of.get(image["id"], []), class_names)
        tree.write(out / "Annotations" / (Path(name).stem + ".xml"), encoding="utf-8")
        written += 1
    return written


def _voc_xml(image: dict, name: str, anns: list[dict], class_names: list[str]) -> ElementTree:
    root = Element("annotation")
    SubElement(root, "folder").text = "JPEGImages"
    SubElement(root, "filename").text = name
    size = SubElement(root, "size")
    for key, value in (("width", image["width"]), ("height", image["height"]), ("depth", 3)):
        SubElement(size, key).text = str(value)
    SubElement(root, "segmented").text = "0"
    for ann, xyxy in zip(anns, xywh_to_xyxy([a["bbox"] for a in anns]), strict=True):
        obj = SubElement(root, "object")
        SubElement(obj, "name").text = class_names[ann["category_id"] - 1]
        SubElement(obj, "pose").text = "Unspecified"
        SubElement(obj, "truncated").text = "0"
        SubElement(obj, "difficult").text = "1" if manifest.is_ignored(ann) else "0"
        box = SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), xyxy, strict=True):
            SubElement(box, key).text = _number(value)
    indent(root, space="\t")
    return ElementTree(root)
