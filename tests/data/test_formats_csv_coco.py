"""CSV and COCO readers: the raccoon CSV agrees with its VOC XML; broken rows and records
are listed with their reasons; a COCO export reads back to the same boxes."""

import io
import json

import pytest
from PIL import Image

from detflow.core.errors import ConfigError, DataError
from detflow.data.collect import CollectOptions, collect_dataset
from detflow.data.convert import convert_dataset
from detflow.data.formats.coco import read_coco
from detflow.data.formats.csv_boxes import read_csv
from detflow.data.formats.voc import read_voc


def _png(width=40, height=30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 80, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def _boxes(scan) -> dict:
    return {im.source: sorted((b.class_name, b.xyxy) for b in im.boxes) for im in scan.images}


def test_raccoon_csv_matches_its_voc_xml(shared_datasets):
    root = shared_datasets / "raccoon"
    scan = read_csv(root, csv_file="data/raccoon_labels.csv")
    assert len(scan.images) == 200 and scan.dropped == [] and scan.class_names == ["raccoon"]
    assert sum(len(im.boxes) for im in scan.images) == 217
    assert _boxes(scan) == _boxes(read_voc(root))


def test_csv_needs_a_choice_among_several_tables(shared_datasets):
    with pytest.raises(ConfigError, match=r"data.csv is not set .* 3 CSV files"):
        read_csv(shared_datasets / "raccoon")


def test_broken_csv_rows_are_listed_and_good_ones_kept(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a", "b", "neg", "extra"):
        (tmp_path / "img" / f"{name}.png").write_bytes(_png())
    (tmp_path / "img" / "bad.png").write_text("not a png")
    (tmp_path / "boxes.csv").write_text(
        "image,label,x1,y1,x2,y2,fold\n"
        "a.png,cat,1,2,10,12,train\n"
        "a.png,cow,1,2,10,12,train\n"  # not in names
        "b.png,cat,x,2,10,12,valid\n"  # non-numeric
        "b.png,,1,2,3,4,valid\n"  # no class
        "neg.png,,,,,,test\n"  # a negative
        ",cat,1,2,3,4,\n"  # no file name
        "gone.png,cat,1,2,3,4,\n"  # no such image
        "bad.png,cat,1,2,3,4,\n"  # not an image
        "../../outside.png,cat,1,2,3,4,\n"  # never read outside the root
    )
    columns = {"filename": "image", "class": "label", "xmin": "x1", "ymin": "y1"}
    columns |= {"xmax": "x2", "ymax": "y2", "split": "fold"}
    scan = read_csv(tmp_path, csv_file="boxes.csv", images="img", columns=columns, names=["cat"])
    reasons = sorted((d["path"], d["reason"]) for d in scan.dropped)
    assert reasons == [
        ("boxes.csv:10", "missing_image"),
        ("boxes.csv:3", "class_not_selected"),
        ("boxes.csv:4", "non_numeric"),
        ("boxes.csv:5", "missing_class"),
        ("boxes.csv:7", "bad_row"),
        ("boxes.csv:8", "missing_image"),
        ("img/bad.png", "unreadable_image"),
        ("img/extra.png", "unannotated_image"),
    ]
    assert _boxes(scan) == {
        "img/a.png": [("cat", (1.0, 2.0, 10.0, 12.0))],
        "img/b.png": [],
        "img/neg.png": [],
    }
    assert {im.source: im.split for im in scan.images}["img/b.png"] == "val"


def test_csv_missing_column_is_a_one_line_error(tmp_path):
    (tmp_path / "t.csv").write_text("file,class,xmin,ymin,xmax,ymax\n")
    with pytest.raises(DataError, match="no column 'filename'.*data.columns"):
        read_csv(tmp_path)


def test_coco_export_reads_back_to_the_same_boxes(tmp_path):
    source = {"format": "synthetic", "num_images": 8, "image_size": 48, "classes": ["circle"]}
    collect_dataset(options=CollectOptions(source={**source, "seed": 1}), out_dir=tmp_path / "raw")
    convert_dataset(
        dataset_json=tmp_path / "raw" / "dataset.json", out_dir=tmp_path / "c", to="coco"
    )
    coco = json.loads((tmp_path / "c" / "annotations.json").read_text())
    coco["categories"].insert(0, {"id": 0, "name": "shapes", "supercategory": "none"})
    for cat in coco["categories"][1:]:
        cat["supercategory"] = "shapes"  # Roboflow's umbrella category: left out
    (tmp_path / "c" / "annotations.json").write_text(json.dumps(coco))
    scan = read_coco(tmp_path / "c")
    assert scan.class_names == ["circle"] and scan.dropped == []
    got = {im.source.split("/")[-1]: im for im in scan.images}
    by_name = {im["id"]: im["file_name"] for im in coco["images"]}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w, y + h) in [b.xyxy for b in got[by_name[ann["image_id"]]].boxes]
    assert sum(len(im.boxes) for im in scan.images) == len(coco["annotations"]) > 0


def test_broken_coco_records_are_listed(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(_png())
    (tmp_path / "images" / "unlisted.png").write_bytes(_png())
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "gone.png", "width": 40, "height": 30},
            {"id": 3},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [1, 2, 3, 4]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]},
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 1},
            {"id": 5, "image_id": 7, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": ["nan", 2, 3, 4]},
        ],
        "categories": [{"id": 1, "name": "cat"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    scan = read_coco(tmp_path, images="images")
    reasons = sorted((d["path"], d["reason"]) for d in scan.dropped)
    assert reasons == [
        ("images/unlisted.png", "unannotated_image"),
        ("instances.json#annotation2", "unknown_class"),
        ("instances.json#annotation3", "bad_box"),
        ("instances.json#annotation6", "non_finite"),
        ("instances.json#image2", "missing_image"),
        ("instances.json#image3", "bad_record"),
        ("instances.json#image7", "missing_image"),
    ]
    assert _boxes(scan) == {"images/a.png": [("cat", (1.0, 2.0, 4.0, 6.0))] * 2}
    assert [b.ignore for b in scan.images[0].boxes] == [None, "crowd"]  # iscrowd: kept, marked
    assert scan.images[0].incomplete == [
        "instances.json#annotation2: unknown_class",
        "instances.json#annotation3: bad_box",
        "instances.json#annotation6: non_finite",
    ]
