"""Pascal VOC reader: one XML file per image (``Annotations/*.xml`` + ``JPEGImages/``, or any
layout where each XML has an image beside it or elsewhere under the root).

``<bndbox>`` holds ``xmin ymin xmax ymax`` in absolute pixels; the reader returns them as
``xyxy`` pixels unchanged (no 1-based shift, so a VOC → canonical → VOC round trip is exact).
XML is parsed with defusedxml. An XML with no ``<object>`` is a negative; an image with no
XML is listed as ``unannotated_image`` (VOC cannot tell an unlabelled image from a negative);
an image that two XML files name (their ``<filename>``) is dropped as ``ambiguous_label``.
``<difficult>1</difficult>`` objects are kept marked ``difficult`` (see ``data.difficult``);
``<size>`` is checked against the image file (see
:func:`detflow.data.formats.common.add_file_image`).
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import parse

from detflow.core.images import DEFAULT_MAX_PIXELS
from detflow.data.formats.base import SourceBox, SourceScan
from detflow.data.formats.common import (
    ClassFilter,
    ImageIndex,
    add_file_image,
    compile_group,
    require_dir,
)

COORDS = ("xmin", "ymin", "xmax", "ymax")


def read_voc(
    root: str | Path,
    *,
    annotations: str | None = None,
    images: str | None = None,
    names: list[str] | None = None,
    group_regex: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceScan:
    """Scan a VOC folder. ``annotations``/``images`` name sub-folders (default: search the
    whole root). Unparseable XML, bad boxes, unknown classes (when ``names`` is given) and
    XML without an image are dropped and listed."""
    root = require_dir(root, what="VOC dataset").resolve()
    xml_root = require_dir(root / annotations, what="VOC annotations") if annotations else root
    index = ImageIndex(root, require_dir(root / images, what="VOC images") if images else None)
    classes = ClassFilter(names)
    pattern = compile_group(group_regex)
    scan = SourceScan(class_names=[])
    used: set[Path] = set()
    claims: dict[Path, list[tuple[str, Element]]] = {}
    for xml in sorted(xml_root.resolve().rglob("*.xml")):
        rel = xml.relative_to(root).as_posix()
        tree = _parse(xml, rel, scan)
        if tree is None:
            continue
        image = index.find(
            tree.findtext("filename") or xml.stem + ".jpg", base=xml.parent, near=xml
        )
        if image is None:
            image = index.find(xml.stem, base=xml.parent, near=xml)
        if image is None:
            scan.drop(
                rel, "label", "missing_image", f"no image named {tree.findtext('filename')!r}"
            )
            continue
        claims.setdefault(image, []).append((rel, tree))
    for image, found in claims.items():  # in the order of the first XML naming each image
        used.add(image)
        if len(found) > 1:
            detail = f"named by {len(found)} XML files: {', '.join(r for r, _ in found)}"
            scan.drop(image.relative_to(root).as_posix(), "image", "ambiguous_label", detail)
            continue
        ((rel, tree),) = found
        add_file_image(
            scan,
            image,
            root=root,
            pattern=pattern,
            max_pixels=max_pixels,
            read_boxes=lambda w, h, tree=tree, rel=rel: _boxes(tree, rel, scan, classes),
            declared=(tree.findtext("size/width"), tree.findtext("size/height")),
            where=rel,
        )
    for image in index.files:
        if image not in used:
            scan.drop(image.relative_to(root).as_posix(), "image", "unannotated_image", "no XML")
    scan.class_names = classes.names()
    return scan


def _parse(xml: Path, rel: str, scan: SourceScan) -> Element | None:
    try:
        root = parse(str(xml)).getroot()
    except (ParseError, DefusedXmlException, OSError, UnicodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else str(exc)  # no absolute path
        scan.drop(rel, "label", "unparseable_xml", detail or type(exc).__name__)
        return None
    if root.tag != "annotation":
        scan.drop(rel, "label", "unparseable_xml", f"root element <{root.tag}>, not <annotation>")
        return None
    return root


def _boxes(tree: Element, rel: str, scan: SourceScan, classes: ClassFilter) -> list[SourceBox]:
    boxes = []
    for number, obj in enumerate(tree.findall("object"), start=1):
        where = f"{rel}#object{number}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            scan.drop(where, "box", "missing_class", "<object> without <name>")
            continue
        if not classes.accept(name):
            scan.drop(where, "box", "class_not_selected", f"class {name!r} not in data.names")
            continue
        box = obj.find("bndbox")
        if box is None:
            scan.drop(where, "box", "missing_box", "<object> without <bndbox>")
            continue
        try:
            xyxy = tuple(float((box.findtext(k) or "").strip()) for k in COORDS)
        except ValueError:
            texts = [box.findtext(k) for k in COORDS]
            scan.drop(where, "box", "non_numeric", f"xmin/ymin/xmax/ymax = {texts}")
            continue
        if not all(math.isfinite(v) for v in xyxy):
            scan.drop(where, "box", "non_finite", str(xyxy))
            continue
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "", "false")
        boxes.append(SourceBox(name, xyxy, "difficult" if difficult else None))
    return boxes
