"""`detflow convert`: canonical → YOLO / VOC / COCO; round trips through the real datasets are
exact to 1e-6."""

import json

import pytest
from defusedxml.ElementTree import parse

from detflow.cli import main
from detflow.data.collect import CollectOptions, collect_dataset
from detflow.data.formats.voc import read_voc
from detflow.data.formats.yolo import read_yolo

COORDS = ("xmin", "ymin", "xmax", "ymax")


def _yolo_labels(root) -> dict:
    """Label file stem → list of (class id, 4 floats); only files under a labels/ folder."""
    out = {}
    for path in root.rglob("*.txt"):
        if "labels" in path.parts:
            rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
            out[path.stem] = sorted((int(r[0]), *map(float, r[1:])) for r in rows)
    return out


def _close(a, b) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-6 for x, y in zip(a, b, strict=True))


def test_yolo_to_canonical_to_yolo_is_exact(shared_datasets, tmp_path):
    original = shared_datasets / "thermal_dogs_people"
    collect_dataset(
        options=CollectOptions(source={"format": "yolo", "path": str(original)}),
        out_dir=tmp_path / "raw",
    )
    code = main(
        ["convert", "--to", "yolo", "--dataset", str(tmp_path / "raw" / "dataset.json"),
         "--out", str(tmp_path / "yolo")]
    )  # fmt: skip
    assert code == 0
    before, after = _yolo_labels(original), _yolo_labels(tmp_path / "yolo")
    assert sorted(before) == sorted(after) and len(before) == 203
    assert sum(1 for rows in after.values() if not rows) == 18  # empty label files stay empty
    for stem, rows in before.items():
        assert len(rows) == len(after[stem]), stem
        assert all(_close(a, b) for a, b in zip(rows, after[stem], strict=True)), stem
    again = read_yolo(tmp_path / "yolo")
    assert again.class_names == ["dog", "person"] and again.dropped == []
    assert {im.split for im in again.images} == {"train", "val", "test"}


def _voc_objects(xml) -> tuple:
    root = parse(str(xml)).getroot()
    size = tuple(int(root.findtext(f"size/{k}")) for k in ("width", "height"))
    objects = sorted(
        (o.findtext("name"), *(float(o.findtext(f"bndbox/{k}")) for k in COORDS))
        for o in root.findall("object")
    )
    return root.findtext("filename"), size, objects


def test_voc_to_canonical_to_voc_is_exact(shared_datasets, tmp_path):
    original = shared_datasets / "raccoon"
    collect_dataset(
        options=CollectOptions(source={"format": "voc", "path": str(original)}),
        out_dir=tmp_path / "raw",
    )
    assert main(
        ["convert", "--to", "voc", "--dataset", str(tmp_path / "raw" / "dataset.json"),
         "--out", str(tmp_path / "voc")]
    ) == 0  # fmt: skip
    written = {p.stem: p for p in (tmp_path / "voc" / "Annotations").glob("*.xml")}
    sources = {p.stem: p for p in (original / "annotations").glob("*.xml")}
    assert sorted(written) == sorted(sources) and len(written) == 200
    for stem, path in sources.items():
        name, size, objects = _voc_objects(path)
        new_name, new_size, new_objects = _voc_objects(written[stem])
        assert (new_name, new_size) == (name, size)
        assert [o[0] for o in objects] == [o[0] for o in new_objects]
        assert all(_close(a[1:], b[1:]) for a, b in zip(objects, new_objects, strict=True))
    assert len(read_voc(tmp_path / "voc").images) == 200


def test_coco_export_and_cli_errors(tmp_path, capsys):
    source = {"format": "synthetic", "num_images": 6, "image_size": 32, "classes": ["square"]}
    report = collect_dataset(
        options=CollectOptions(source={**source, "seed": 2}), out_dir=tmp_path / "raw"
    )
    dataset = str(tmp_path / "raw" / "dataset.json")
    assert (
        main(["convert", "--to", "coco", "--dataset", dataset, "--out", str(tmp_path / "c")]) == 0
    )
    coco = json.loads((tmp_path / "c" / "annotations.json").read_text())
    assert len(coco["annotations"]) == report["boxes"] and "detflow" not in coco
    assert all((tmp_path / "c" / "images" / im["file_name"]).is_file() for im in coco["images"])
    missing = str(tmp_path / "nope.json")
    assert main(["convert", "--to", "voc", "--dataset", missing, "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.json: not found" in err[0]
    with pytest.raises(SystemExit):
        main(["convert", "--to", "tfrecord", "--dataset", dataset, "--out", str(tmp_path / "t")])
