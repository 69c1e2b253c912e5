import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

from detflow.core.errors import ConfigError
from detflow.core.files import sha256_file
from detflow.data import manifest
from detflow.data.clean import CleanPolicy, clean_dataset
from detflow.data.collect import CollectOptions, collect_dataset


def _dataset_with_problems(root):
    """A raw canonical dataset holding a duplicate, a broken image and bad boxes."""
    (root / "images").mkdir(parents=True)
    ds = manifest.new_dataset(class_names=["a", "b"])
    rng = np.random.default_rng(0)
    for name in ("one", "two"):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(buffer, "PNG")
        (root / "images" / f"{name}.png").write_bytes(buffer.getvalue())
    rgba = io.BytesIO()
    Image.new("RGBA", (50, 40), (1, 2, 3, 128)).save(rgba, "PNG")
    (root / "images" / "rgba.png").write_bytes(rgba.getvalue())
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    one = manifest.add_image(
        ds, file_name="one.png", width=50, height=40, source="one.png", group="g1"
    )
    manifest.add_image(ds, file_name="one.png", width=50, height=40, source="copy.png", group="g2")
    manifest.add_image(
        ds, file_name="broken.png", width=50, height=40, source="broken.png", group="g3"
    )
    two = manifest.add_image(
        ds, file_name="two.png", width=50, height=40, source="two.png", group="g4"
    )
    manifest.add_image(ds, file_name="rgba.png", width=50, height=40, source="rgba.png", group="g5")
    manifest.add_box(ds, image_id=one, category_id=1, xywh=[5, 5, 10, 10])  # kept
    manifest.add_box(ds, image_id=one, category_id=2, xywh=[45, 35, 7, 7])  # clipped
    manifest.add_box(ds, image_id=one, category_id=1, xywh=[60, 5, 10, 10])  # out of bounds
    manifest.add_box(ds, image_id=2, category_id=1, xywh=[5, 5, 10, 10])  # on duplicate
    manifest.add_box(ds, image_id=3, category_id=1, xywh=[5, 5, 10, 10])  # on broken image
    manifest.add_box(ds, image_id=two, category_id=1, xywh=[5, 5, -3, 10])  # inverted
    manifest.add_box(ds, image_id=two, category_id=1, xywh=[5, 5, 1, 1])  # too small
    manifest.add_box(ds, image_id=two, category_id=9, xywh=[5, 5, 10, 10])  # unknown class
    manifest.add_box(ds, image_id=two, category_id=2, xywh=[0, 5, 10, 10])
    ds["annotations"][-1]["bbox"][0] = "HUGE"  # 1e400 in the file: parses as infinity
    text = json.dumps({**ds, "detflow": {"image_dir": "images"}})
    (root / "dataset.json").write_text(text.replace('"HUGE"', "1e400"))
    return root / "dataset.json"


def test_clean_accounts_for_every_image_and_box(tmp_path):
    raw = _dataset_with_problems(tmp_path / "raw")
    before = {p.name: sha256_file(p) for p in (tmp_path / "raw").rglob("*") if p.is_file()}
    policy = CleanPolicy(min_box_px=2, incomplete_images="keep")  # every box reason, listed
    report = clean_dataset(in_json=raw, out_dir=tmp_path / "clean", policy=policy)
    after = {p.name: sha256_file(p) for p in (tmp_path / "raw").rglob("*") if p.is_file()}
    assert before == after
    assert report["images_kept"] + report["images_dropped"] == report["images_in"] == 5
    assert report["boxes_kept"] + report["boxes_dropped"] == report["boxes_in"] == 9
    assert report["images_dropped_by_reason"] == {"exact_duplicate": 1, "unreadable_image": 1}
    assert report["boxes_dropped_by_reason"] == {
        "image_dropped:exact_duplicate": 1,
        "image_dropped:unreadable_image": 1,
        "non_finite": 1,
        "non_positive_size": 1,
        "out_of_bounds": 1,
        "too_small": 1,
        "unknown_class": 1,
    }
    assert report["boxes_clipped"] == 1
    assert report["images_incomplete_kept"] == 2  # "one" lost a box out of bounds, "two" two
    assert [e["source"] for e in report["incomplete_kept"]] == ["one.png", "two.png"]
    assert any("incomplete images kept" in w for w in report["warnings"])
    clean = manifest.load_dataset(tmp_path / "clean" / "dataset.json")
    assert [a["bbox"] for a in clean["annotations"]] == [[5, 5, 10, 10], [45, 35, 5, 5]]
    for image in clean["images"]:
        path = manifest.image_dir(tmp_path / "clean" / "dataset.json", clean) / image["file_name"]
        assert Image.open(path).mode == "RGB"


def test_raccoon_exact_duplicates_found(shared_datasets, tmp_path):
    """The 4 byte-identical pairs of the raccoon dataset (read as plain images here)."""
    from detflow.data.formats.yolo import read_yolo

    source = tmp_path / "raccoon"
    (source / "images").mkdir(parents=True)
    for image in (shared_datasets / "raccoon" / "images").glob("*.jpg"):
        (source / "images" / image.name).symlink_to(image)
    (source / "data.yaml").write_text("names: [raccoon]\n")
    assert len(read_yolo(source).images) == 200
    collect_dataset(
        options=CollectOptions(source={"format": "yolo", "path": str(source)}),
        out_dir=tmp_path / "raw",
    )
    report = clean_dataset(  # no label files: incomplete images, kept for this test
        in_json=tmp_path / "raw" / "dataset.json",
        out_dir=tmp_path / "clean",
        policy=CleanPolicy(incomplete_images="keep"),
    )
    assert report["images_dropped_by_reason"] == {"exact_duplicate": 4}
    assert report["images_kept"] + report["images_dropped"] == report["images_in"] == 200


def test_thermal_burst_near_duplicates_share_a_group(thermal_source, tmp_path):
    collect_dataset(
        options=CollectOptions(
            source={"format": "yolo", "path": str(thermal_source), "group_regex": r"^(IMG_\d+)"}
        ),
        out_dir=tmp_path / "raw",
    )
    report = clean_dataset(
        in_json=tmp_path / "raw" / "dataset.json",
        out_dir=tmp_path / "clean",
        policy=CleanPolicy(near_duplicate_distance=4),
    )
    assert report["near_duplicate_pairs"] >= 20 and report["groups_merged"] > 0
    assert report["images_kept"] + report["images_dropped"] == report["images_in"] == 203
    assert report["boxes_kept"] + report["boxes_dropped"] == report["boxes_in"] == 257
    clean = manifest.load_dataset(tmp_path / "clean" / "dataset.json")
    group_of = {im["source"]: im["group"] for im in clean["images"]}
    for pair in report["near_duplicates"]:
        assert group_of[pair["a"]] == group_of[pair["b"]]
    # IMG_0024 and IMG_0025 are different bursts but near-identical frames: one group now
    assert any(
        p["a"].split("/")[-1][:8] != p["b"].split("/")[-1][:8] for p in report["near_duplicates"]
    )


@pytest.mark.parametrize(
    ("config", "max_pixels", "message"),
    [
        ({"min_box": 2}, 100, "clean.min_box is not a clean option; allowed: broken_images, "),
        ({"resize": "crop"}, 100, "clean.resize='crop' is not allowed; use one of: none, stretch"),
        ({"min_box_px": "big"}, 100, "clean.min_box_px='big' must be a number$"),
        ({"min_box_px": -1}, 100, "clean.min_box_px=-1 must be a number >= 0"),
        ({"near_duplicate_distance": 2.5}, 100, r"distance=2.5 must be an integer or null"),
        ({}, "huge", "limits.max_pixels='huge' must be an integer$"),
        ({}, 0, "limits.max_pixels=0 must be an integer > 0"),
    ],
)
def test_clean_policy_names_the_key_at_fault(config, max_pixels, message):
    with pytest.raises(ConfigError, match=message):
        CleanPolicy.from_config(config, max_pixels=max_pixels)


def test_the_report_lists_the_clean_keys_only(tmp_path):
    raw = _dataset_with_problems(tmp_path / "raw")
    policy = CleanPolicy.from_config({"min_box_px": 2}, max_pixels=10**6)
    report = clean_dataset(in_json=raw, out_dir=tmp_path / "clean", policy=policy)
    assert report["policy"] == {**CleanPolicy().to_dict(), "min_box_px": 2}
    assert "max_pixels" not in report["policy"]  # limits.max_pixels is no clean.* key


def test_clean_output_is_byte_identical_for_any_worker_count(tmp_path):
    raw = _dataset_with_problems(tmp_path / "raw")
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"clean{workers}"
        report = clean_dataset(in_json=raw, out_dir=out, policy=CleanPolicy(), workers=workers)
        files = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        outputs.append((json.dumps(report, sort_keys=True), files))
    assert outputs[0] == outputs[1]
    assert len(outputs[0][1]) == 3  # dataset.json + the two readable, distinct images kept


def test_killed_clean_leaves_no_worker_behind(tmp_path):
    """A clean process killed mid-run (as `dvc repro` interrupted) takes its workers with it:
    none keeps running or holds the stage's output pipe open (that hung the caller)."""
    import signal
    import subprocess
    import sys

    from conftest import REPO

    child = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from detflow.data.clean import CleanPolicy\n"
        "from detflow.data.clean_images import analyse_all\n"
        "images = sorted(Path('data/sources/thermal_dogs_people').rglob('*.jpg'))[:100]\n"
        "items = [(p, p.name, p.name) for p in images] * 10\n"
        "print('started', flush=True)\n"
        "stage = Path(sys.argv[1])\n"
        "for _ in analyse_all(items, policy=CleanPolicy(), stage_dir=stage, workers=2):\n"
        "    time.sleep(0.05)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", child, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout.readline() == b"started\n"
    time.sleep(2)  # workers busy
    process.send_signal(signal.SIGKILL)
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.read()), daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert result, "a worker outlived the killed clean process and holds its output pipe"
