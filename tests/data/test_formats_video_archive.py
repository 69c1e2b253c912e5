"""Video frames (a video written here with OpenCV) and archives (zip/tar, unsafe members)."""

import io
import shutil
import tarfile
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image

from detflow.core.errors import ConfigError, DataError
from detflow.data import manifest
from detflow.data.collect import CollectOptions, collect_dataset, scan_source


def _write_video(path, *, frames=30, fps=10.0, hold=3):
    """A white square moving every ``hold`` frames (so consecutive frames repeat)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for index in range(frames):
        frame = np.full((48, 64, 3), 40, np.uint8)
        x = (index // hold) * 5 % 50
        cv2.rectangle(frame, (x, 10), (x + 12, 30), (255, 255, 255), -1)
        writer.write(frame)
    writer.release()


@pytest.fixture
def videos(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    _write_video(folder / "walk.avi")
    _write_video(folder / "short clip.avi", frames=12)
    (folder / "broken.avi").write_bytes(b"not a video")
    return folder


def test_video_frames_every_n_share_the_video_group_and_are_unlabelled(videos, tmp_path):
    source = {"format": "video", "path": str(videos), "every_n_frames": 5, "names": ["square"]}
    report = collect_dataset(options=CollectOptions(source=source), out_dir=tmp_path / "raw")
    dataset = manifest.load_dataset(tmp_path / "raw" / "dataset.json")
    sources = [im["source"] for im in dataset["images"]]
    assert sources == [f"short clip.avi#frame={i:06d}" for i in (0, 5, 10)] + [
        f"walk.avi#frame={i:06d}" for i in range(0, 30, 5)
    ]
    assert {im["group"] for im in dataset["images"]} == {"short clip.avi", "walk.avi"}
    assert all(im["labelled"] is False for im in dataset["images"])
    assert (report["images"], report["unlabelled"], report["negatives"]) == (9, 9, 0)
    assert report["dropped_by_reason"] == {"unreadable_video": 1}
    first = tmp_path / "raw" / "images" / dataset["images"][0]["file_name"]
    assert Image.open(first).size == (64, 48)


def test_video_seconds_cap_and_near_identical_skipping(videos, tmp_path):
    walk = videos / "walk.avi"
    base = {"format": "video", "path": str(walk), "names": ["square"]}
    by_time = collect_dataset(
        options=CollectOptions(source={**base, "every_seconds": 1.0}), out_dir=tmp_path / "a"
    )
    assert by_time["images"] == 3  # 30 frames at 10 fps: frames 0, 10, 20
    capped = collect_dataset(
        options=CollectOptions(source={**base, "every_n_frames": 1, "max_frames": 4}),
        out_dir=tmp_path / "b",
    )
    assert capped["images"] == 4
    distinct = collect_dataset(
        options=CollectOptions(source={**base, "every_n_frames": 1, "skip_similar": 0}),
        out_dir=tmp_path / "c",
    )
    assert distinct["images"] == 10  # the square moves every third frame
    assert distinct["dropped_by_reason"] == {"near_identical_frame": 20}
    with pytest.raises(ConfigError, match="exactly one"):
        collect_dataset(
            options=CollectOptions(source={**base, "every_n_frames": 2, "every_seconds": 1.0}),
            out_dir=tmp_path / "d",
        )


def test_video_without_class_names_is_a_config_error(videos, tmp_path):
    with pytest.raises(ConfigError, match="data.names"):
        collect_dataset(
            options=CollectOptions(
                source={"format": "video", "path": str(videos), "every_n_frames": 10}
            ),
            out_dir=tmp_path / "raw",
        )
    assert not (tmp_path / "raw").exists()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def _yolo_zip(path, extra=()):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ds/data.yaml", "names: [cat]\n")
        archive.writestr("ds/images/a 1.png", _png())
        archive.writestr("ds/labels/a 1.txt", "0 0.5 0.5 0.25 0.5\n")
        archive.writestr("ds/images/neg.png", _png()[:-1] + b"\x00")
        archive.writestr("ds/labels/neg.txt", "")
        for name, data in extra:
            archive.writestr(name, data)


def test_zip_of_a_shared_yolo_dataset(shared_datasets, tmp_path):
    archive = tmp_path / "thermal.zip"
    shutil.make_archive(str(archive.with_suffix("")), "zip", shared_datasets, "thermal_dogs_people")
    source = {"format": "archive", "path": str(archive), "contents": {"format": "yolo"}}
    report = collect_dataset(options=CollectOptions(source=source), out_dir=tmp_path / "raw")
    assert (report["images"], report["boxes"], report["negatives"]) == (203, 257, 18)
    dataset = manifest.load_dataset(tmp_path / "raw" / "dataset.json")
    assert {im["split"] for im in dataset["images"]} == {"train", "val", "test"}
    prefixes = tuple(f"thermal_dogs_people/{s}/images/" for s in ("train", "valid", "test"))
    assert all(im["source"].startswith(prefixes) for im in dataset["images"])


def test_zip_with_a_parent_member_is_rejected_and_writes_nothing_outside(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "evil.zip"
    _yolo_zip(archive, extra=[("../escaped.txt", "x"), ("/abs.txt", "x"), ("ds/../../up.png", "x")])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    source = {"format": "archive", "path": str(archive), "contents": {"format": "yolo"}}
    report = collect_dataset(options=CollectOptions(source=source), out_dir=work / "raw")
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "raw" not in p.parts)
    assert after == before  # only the output folder was added
    rejected = sorted(d["path"] for d in report["dropped"] if d["reason"] == "unsafe_member")
    assert rejected == ["../escaped.txt", "/abs.txt", "ds/../../up.png"]
    assert report["images"] == 2 and report["boxes"] == 1


def test_tar_links_and_devices_are_rejected(tmp_path):
    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("data.yaml", b"names: [cat]\n"), ("images/a.png", _png())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, kind in (("images/link.png", tarfile.SYMTYPE), ("dev", tarfile.CHRTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd"
            tar.addfile(info)
        hard = tarfile.TarInfo("images/hard.png")
        hard.type, hard.linkname = tarfile.LNKTYPE, "images/a.png"
        tar.addfile(hard)
    source = {"format": "archive", "path": str(archive), "contents": {"format": "yolo"}}
    report = collect_dataset(options=CollectOptions(source=source), out_dir=tmp_path / "raw")
    rejected = {d["path"]: d["detail"] for d in report["dropped"] if d["item"] == "member"}
    assert set(rejected) == {"images/link.png", "dev", "images/hard.png"}
    assert report["images"] == 1


def test_archive_errors_are_one_line(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"PK garbage")
    base = {"format": "archive", "contents": {"format": "yolo"}}
    with pytest.raises(DataError, match="x.zip: cannot read the archive"):
        collect_dataset(
            options=CollectOptions(source={**base, "path": str(tmp_path / "x.zip")}),
            out_dir=tmp_path / "r",
        )
    with pytest.raises(ConfigError, match="data.contents.format='archive'"):
        collect_dataset(
            options=CollectOptions(source={**base, "path": "x", "contents": {"format": "archive"}}),
            out_dir=tmp_path / "r",
        )
    _yolo_zip(tmp_path / "ok.zip")
    with pytest.raises(DataError, match="data.max_bytes"):
        collect_dataset(
            options=CollectOptions(
                source={**base, "path": str(tmp_path / "ok.zip"), "max_bytes": 100}
            ),
            out_dir=tmp_path / "r",
        )


def test_pixel_limit_applies_to_archived_images_and_video_frames(videos, tmp_path):
    _yolo_zip(tmp_path / "ok.zip")
    source = {"format": "archive", "path": str(tmp_path / "ok.zip"), "contents": {"format": "yolo"}}
    scan = scan_source(source, max_pixels=100)
    assert not scan.images
    assert [d["reason"] for d in scan.dropped] == ["unreadable_image"] * 2
    assert all("pixel limit" in d["detail"] for d in scan.dropped)
    scan.close()
    video = {"format": "video", "path": str(videos), "every_n_frames": 5, "names": ["square"]}
    scan = scan_source(video, max_pixels=1000)
    assert not scan.images
    assert sorted(d["reason"] for d in scan.dropped) == ["over_pixel_limit"] * 2 + [
        "unreadable_video"
    ]
    scan.close()
    assert (
        collect_dataset(
            options=CollectOptions(source=source, max_pixels=32 * 24), out_dir=tmp_path / "c"
        )["images"]
        == 2
    )
