import io
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from detflow.core.errors import ConfigError, DataError
from detflow.core.files import sha256_file
from detflow.data import manifest
from detflow.data.collect import CollectOptions, collect_dataset
from detflow.data.formats.yolo import read_yolo

from conftest import REPO, run


def _tree_hash(root: Path) -> dict:
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_read_thermal_yolo(thermal_source):
    scan = read_yolo(thermal_source, group_regex=r"^(IMG_\d+)")
    assert scan.class_names == ["dog", "person"]
    assert len(scan.images) == 203
    assert sum(len(im.boxes) for im in scan.images) == 257
    assert sum(1 for im in scan.images if not im.boxes) == 18
    assert scan.dropped == []
    assert any(" " in im.source for im in scan.images)
    assert {im.split for im in scan.images} == {"train", "val", "test"}
    burst = [im.group for im in scan.images if im.source.split("/")[-1].startswith("IMG_0001")]
    assert set(burst) == {"IMG_0001"} and len(burst) == 4


def test_collect_thermal_keeps_everything_and_never_writes_source(thermal_source, tmp_path):
    before = _tree_hash(thermal_source)
    report = collect_dataset(
        options=CollectOptions(
            source={"format": "yolo", "path": str(thermal_source), "group_regex": r"^(IMG_\d+)"}
        ),
        out_dir=tmp_path / "raw",
    )
    assert _tree_hash(thermal_source) == before
    assert (report["images"], report["boxes"], report["negatives"]) == (203, 257, 18)
    dataset = manifest.load_dataset(tmp_path / "raw" / "dataset.json")
    assert all({"source", "group"} <= set(im) for im in dataset["images"])
    for image in dataset["images"]:
        assert (tmp_path / "raw" / "images" / image["file_name"]).is_file()


def test_collect_is_byte_identical_on_rerun(tmp_path):
    source = {
        "format": "synthetic",
        "num_images": 12,
        "image_size": 64,
        "classes": ["circle", "square"],
        "seed": 3,
    }
    collect_dataset(options=CollectOptions(source=source), out_dir=tmp_path / "a")
    collect_dataset(options=CollectOptions(source=source), out_dir=tmp_path / "b")
    assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b")


def _png(width=32, height=24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 20, 20)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_broken_yolo_items_are_listed_and_good_ones_kept(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text("names: [cat, dog]\n")
    (root / "images" / "good.png").write_bytes(_png())
    (root / "labels" / "good.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"  # kept
        "1 0.5 0.5 0.2\n"  # too few columns
        "0 a 0.5 0.2 0.2\n"  # non-numeric
        "0 nan 0.5 0.2 0.2\n"  # non-finite
        "7 0.5 0.5 0.2 0.2\n"  # unknown class id
    )
    (root / "images" / "empty.jpg").write_bytes(b"")
    (root / "images" / "text.jpg").write_text("not an image")
    (root / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    report = collect_dataset(
        options=CollectOptions(source={"format": "yolo", "path": str(root)}),
        out_dir=tmp_path / "raw",
    )
    reasons = sorted(d["reason"] for d in report["dropped"])
    assert reasons == [
        "bad_columns",
        "non_finite",
        "non_numeric",
        "orphan_label",
        "unknown_class",
        "unreadable_image",
        "unreadable_image",
    ]
    assert report["images"] == 1 and report["boxes"] == 1
    json.dumps(report, allow_nan=False)


def _yolo_without_data_yaml(root: Path) -> Path:
    """A YOLO folder with one image and a class-1 box, and no data.yaml."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "a.png").write_bytes(_png())
    (root / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    return root


@pytest.mark.parametrize("names_file", ["classes.txt", "obj.names", "labels/classes.txt"])
def test_yolo_classes_txt_or_darknet_names_name_the_classes(tmp_path, names_file):
    root = _yolo_without_data_yaml(tmp_path / "ds")
    (root / names_file).write_text("cat\r\ndog\n\n")  # any line ends, trailing blank lines
    report = collect_dataset(
        options=CollectOptions(source={"format": "yolo", "path": str(root)}),
        out_dir=tmp_path / "raw",
    )
    dataset = manifest.load_dataset(tmp_path / "raw" / "dataset.json")
    assert [c["name"] for c in dataset["categories"]] == ["cat", "dog"]
    assert [a["category_id"] for a in dataset["annotations"]] == [2]  # id 1 = line 2 = dog
    assert report["class_names_from"] == names_file
    assert report["dropped"] == []  # labels/classes.txt is not an orphan label


def test_yolo_names_file_data_yaml_first_and_conflicts_named(tmp_path):
    root = _yolo_without_data_yaml(tmp_path / "ds")
    (root / "classes.txt").write_text("cat\ndog\n")
    (root / "data.yaml").write_text("names: [fox, owl]\n")
    scan = read_yolo(root)
    assert (scan.class_names, scan.class_names_from) == (["fox", "owl"], "data.yaml")
    (root / "data.yaml").unlink()
    (root / "obj.names").write_text("dog\ncat\n")
    with pytest.raises(DataError, match="classes.txt and obj.names list different class names"):
        read_yolo(root)
    (root / "obj.names").write_text("cat\n\ndog\n")
    with pytest.raises(DataError, match="obj.names: a blank line among the names"):
        read_yolo(root)
    (root / "obj.names").unlink()
    scan = read_yolo(root, names=["dog"])
    assert scan.class_names_from == "data.names (selected from classes.txt)"
    assert [b.class_name for b in scan.images[0].boxes] == ["dog"]
    (root / "classes.txt").unlink()
    with pytest.raises(ConfigError, match="no data.yaml, classes.txt or \\*.names; list the"):
        read_yolo(root)


def test_missing_path_and_unknown_format_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        collect_dataset(
            options=CollectOptions(source={"format": "yolo", "path": str(tmp_path / "nope")}),
            out_dir=tmp_path / "raw",
        )
    with pytest.raises(ConfigError, match="data.format='tfrecord'.*yolo"):
        collect_dataset(
            options=CollectOptions(source={"format": "tfrecord", "path": "x"}),
            out_dir=tmp_path / "raw",
        )
    with pytest.raises(ConfigError, match="data.colour"):
        collect_dataset(
            options=CollectOptions(source={"format": "yolo", "path": "x", "colour": 1}),
            out_dir=tmp_path / "raw",
        )
    assert not (tmp_path / "raw").exists()


def test_collect_shared_yolo_with_spaces_and_empty_label_files(shared_datasets, tmp_path):
    root = shared_datasets / "thermal_dogs_people"
    empty = [p for p in root.rglob("labels/*.txt") if p.stat().st_size == 0]
    assert empty and any(" " in p.name for p in root.rglob("*.jpg"))
    report = collect_dataset(
        options=CollectOptions(
            source={"format": "yolo", "path": str(root), "group_regex": r"^(IMG_\d+)"}
        ),
        out_dir=tmp_path / "raw",
    )
    assert (report["images"], report["boxes"], report["negatives"]) == (203, 257, len(empty))
    assert report["dropped"] == []


def test_several_sources_merge_with_a_class_map(shared_datasets, tmp_path):
    source = {
        "format": "voc",
        "path": str(shared_datasets / "raccoon"),
        "extra_sources": [
            {"format": "yolo", "path": str(shared_datasets / "thermal_dogs_people")},
            {
                "format": "csv",
                "path": str(shared_datasets / "raccoon"),
                "csv": "data/test_labels.csv",
            },
        ],
        "class_map": {"raccoon": "animal", "dog": "animal", "person": None},
    }
    report = collect_dataset(options=CollectOptions(source=source), out_dir=tmp_path / "raw")
    dataset = manifest.load_dataset(tmp_path / "raw" / "dataset.json")
    assert manifest.class_names(dataset) == ["animal"]
    by_reason = report["dropped_by_reason"]
    assert by_reason.pop("class_dropped") > 0 and by_reason == {"unannotated_image": 160}
    assert report["images"] == 200 + 203 + 40
    sources = [im["source"] for im in dataset["images"]]
    assert sources[0] == "images/raccoon-1.jpg"
    assert sum(s.startswith("extra_sources[0]/train/") for s in sources) > 0
    groups = {
        im["group"] for im in dataset["images"] if im["source"].startswith("extra_sources[1]")
    }
    assert all(g.startswith("extra_sources[1]/") for g in groups)
    with pytest.raises(ConfigError, match="data.class_map.racoon: no source has class"):
        collect_dataset(
            options=CollectOptions(source={**source, "class_map": {"racoon": "animal"}}),
            out_dir=tmp_path / "x",
        )
    with pytest.raises(DataError, match=r"data.extra_sources\[0\]: .*nope: YOLO dataset folder"):
        collect_dataset(
            options=CollectOptions(
                source={
                    **source,
                    "extra_sources": [{"format": "yolo", "path": str(tmp_path / "nope")}],
                }
            ),
            out_dir=tmp_path / "x",
        )


def test_unknown_format_lists_every_format(tmp_path):
    with pytest.raises(ConfigError) as info:
        collect_dataset(
            options=CollectOptions(source={"format": "kitti", "path": "x"}),
            out_dir=tmp_path / "raw",
        )
    assert "\n" not in str(info.value)
    for fmt in ("yolo", "coco", "voc", "csv", "video", "archive", "synthetic"):
        assert fmt in str(info.value)


def test_collect_stage_on_a_voc_folder_and_a_missing_one(shared_datasets, tmp_path):
    raccoon = shared_datasets / "raccoon"
    ok = run(
        [sys.executable, "stages/collect.py", "data=voc", f"data.path={raccoon}",
         f"hydra.run.dir={tmp_path / 'ok'}"],
        REPO,
    )  # fmt: skip
    report = json.loads((tmp_path / "ok" / "reports" / "collect.json").read_text())
    assert (report["images"], report["boxes"]) == (200, 217), ok.stdout
    bad = run(
        [sys.executable, "stages/collect.py", "data=voc", f"data.path={tmp_path / 'absent'}",
         f"hydra.run.dir={tmp_path / 'bad'}"],
        REPO,
        check=False,
    )  # fmt: skip
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(lines) == 1 and "absent: VOC dataset folder not found" in lines[0]


def test_link_hard_links_images_and_leaves_the_source_as_it_was(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.png").write_bytes(_png())
    (root / "data.yaml").write_text("names: [cat]\n")
    before = _tree_hash(root)
    source = {"format": "yolo", "path": str(root), "link": True}
    collect_dataset(options=CollectOptions(source=source), out_dir=tmp_path / "raw")
    [image] = manifest.load_dataset(tmp_path / "raw" / "dataset.json")["images"]
    linked = tmp_path / "raw" / "images" / image["file_name"]
    assert linked.stat().st_ino == (root / "images" / "a.png").stat().st_ino
    assert _tree_hash(root) == before
    collect_dataset(
        options=CollectOptions(source={**source, "link": False}), out_dir=tmp_path / "copy"
    )
    copied = tmp_path / "copy" / "images" / image["file_name"]
    assert copied.stat().st_ino != linked.stat().st_ino


def test_collect_options_check_the_mapping_and_the_pixel_limit():
    data = {"format": "yolo", "path": "x"}
    options = CollectOptions.from_config(data, max_pixels=1000)
    assert options.source == data and options.max_pixels == 1000
    with pytest.raises(ConfigError, match=r"^data=\['x'\] must be a mapping$"):
        CollectOptions.from_config(["x"])
    with pytest.raises(ConfigError, match="^limits.max_pixels='huge' must be an integer$"):
        CollectOptions.from_config(data, max_pixels="huge")
    with pytest.raises(ConfigError, match="^limits.max_pixels=-5 must be an integer > 0$"):
        CollectOptions(source=data, max_pixels=-5)
