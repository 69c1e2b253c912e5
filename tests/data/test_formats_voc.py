"""Pascal VOC reader: the real raccoon dataset (with grayscale JPEGs) and broken XML."""

import io

from PIL import Image

from detflow.data import manifest
from detflow.data.collect import CollectOptions, collect_dataset
from detflow.data.formats.voc import read_voc


def _jpeg(width=40, height=30, mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 120).save(buffer, format="JPEG")
    return buffer.getvalue()


def _xml(filename: str, objects: str) -> str:
    return (
        f"<annotation><filename>{filename}</filename>"
        "<size><width>40</width><height>30</height><depth>3</depth></size>"
        f"{objects}</annotation>"
    )


def _obj(name="cat", box=(1, 2, 20, 25)) -> str:
    coords = "".join(
        f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
    )
    return f"<object><name>{name}</name><bndbox>{coords}</bndbox></object>"


def test_raccoon_voc_is_read_completely(shared_datasets, tmp_path):
    root = shared_datasets / "raccoon"
    report = collect_dataset(
        options=CollectOptions(source={"format": "voc", "path": str(root)}),
        out_dir=tmp_path / "raw",
    )
    assert (report["images"], report["boxes"], report["negatives"]) == (200, 217, 0)
    assert report["dropped"] == []
    dataset = manifest.load_dataset(tmp_path / "raw" / "dataset.json")
    assert manifest.class_names(dataset) == ["raccoon"]
    images = tmp_path / "raw" / "images"
    modes = {Image.open(images / im["file_name"]).mode for im in dataset["images"]}
    assert modes == {"RGB", "L"}  # the three grayscale JPEGs are kept as they are
    first = next(im for im in dataset["images"] if im["source"] == "images/raccoon-1.jpg")
    assert (first["width"], first["height"]) == (650, 417)
    boxes = [a["bbox"] for a in dataset["annotations"] if a["image_id"] == first["id"]]
    assert boxes == [[81.0, 88.0, 441.0, 320.0]]  # xyxy 81,88,522,408 → COCO xywh


def test_broken_voc_items_are_listed_and_good_ones_kept(tmp_path):
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    ann, img = root / "Annotations", root / "JPEGImages"
    for name in ("good", "neg", "badbox", "gray", "bomb", "trunc", "noimage_ref"):
        (img / f"{name}.jpg").write_bytes(_jpeg(mode="L" if name == "gray" else "RGB"))
    (img / "unannotated.jpg").write_bytes(_jpeg())
    (ann / "good.xml").write_text(_xml("good.jpg", _obj() + _obj("dog", (0, 0, 5, 5))))
    (ann / "neg.xml").write_text(_xml("neg.jpg", ""))
    (ann / "gray.xml").write_text(_xml("gray.jpg", _obj()))
    (ann / "badbox.xml").write_text(
        "<annotation><filename>badbox.jpg</filename>"
        + _obj("cat", ("a", 1, 2, 3))
        + _obj("cat", ("nan", 1, 2, 3))
        + "<object><name>cat</name></object>"
        + "<object><bndbox/></object></annotation>"
    )
    (ann / "bomb.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;">]>'
        "<annotation><filename>bomb.jpg</filename>&y;</annotation>"
    )
    (ann / "trunc.xml").write_text("<annotation><filename>trunc.jpg</filename><object>")
    (ann / "missing.xml").write_text(_xml("missing.jpg", _obj()))
    (ann / "unknown.xml").write_text(_xml("noimage_ref.jpg", _obj("zebra")))
    scan = read_voc(root, names=["cat", "dog"])
    reasons = sorted((d["path"].split("/")[-1].split("#")[0], d["reason"]) for d in scan.dropped)
    assert reasons == [
        ("badbox.xml", "missing_box"),
        ("badbox.xml", "missing_class"),
        ("badbox.xml", "non_finite"),
        ("badbox.xml", "non_numeric"),
        ("bomb.jpg", "unannotated_image"),  # its XML could not be used
        ("bomb.xml", "unparseable_xml"),
        ("missing.xml", "missing_image"),
        ("trunc.jpg", "unannotated_image"),
        ("trunc.xml", "unparseable_xml"),
        ("unannotated.jpg", "unannotated_image"),
        ("unknown.xml", "class_not_selected"),
    ]
    kept = {im.source: [(b.class_name, b.xyxy) for b in im.boxes] for im in scan.images}
    assert kept["JPEGImages/good.jpg"] == [("cat", (1.0, 2.0, 20.0, 25.0)), ("dog", (0, 0, 5, 5))]
    assert kept["JPEGImages/neg.jpg"] == [] and kept["JPEGImages/badbox.jpg"] == []
    assert set(kept) == {f"JPEGImages/{n}.jpg" for n in ("good", "neg", "gray", "badbox")} | {
        "JPEGImages/noimage_ref.jpg"
    }
    assert scan.class_names == ["cat", "dog"]


def test_voc_pairs_in_one_folder_and_classes_sorted_without_names(tmp_path):
    (tmp_path / "b.jpg").write_bytes(_jpeg())
    (tmp_path / "b.xml").write_text(_xml("elsewhere/b.jpg", _obj("zebra") + _obj("ant")))
    scan = read_voc(tmp_path)
    assert scan.class_names == ["ant", "zebra"]
    assert [im.source for im in scan.images] == ["b.jpg"] and scan.dropped == []


def test_difficult_objects_survive_a_voc_round_trip(tmp_path):
    """VOC → canonical (``ignore: difficult``) → VOC writes ``<difficult>1`` back."""
    from detflow.data.convert import convert_dataset

    source = tmp_path / "src"
    source.mkdir()
    (source / "a.jpg").write_bytes(_jpeg())
    hard = _obj("cat", (5, 5, 30, 25)).replace("</object>", "<difficult>1</difficult></object>")
    (source / "a.xml").write_text(_xml("a.jpg", _obj() + hard))
    collect_dataset(
        options=CollectOptions(source={"format": "voc", "path": str(source)}),
        out_dir=tmp_path / "raw",
    )
    raw = manifest.load_dataset(tmp_path / "raw" / "dataset.json")
    assert [a.get("ignore") for a in raw["annotations"]] == [None, "difficult"]
    convert_dataset(
        dataset_json=tmp_path / "raw" / "dataset.json", out_dir=tmp_path / "v", to="voc"
    )
    (xml,) = (tmp_path / "v" / "Annotations").glob("*.xml")
    scan = read_voc(tmp_path / "v")
    assert [b.ignore for b in scan.images[0].boxes] == [None, "difficult"], xml.read_text()
