"""split: leakage-free (groups, near-duplicates, videos), stratified, reproducible."""

import itertools
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from detflow.core.errors import ConfigError, DataError
from detflow.core.files import sha256_file
from detflow.data import manifest
from detflow.data.clean import clean_dataset
from detflow.data.collect import CollectOptions, collect_dataset
from detflow.data.near_duplicates import perceptual_hash
from detflow.data.split import SPLITS, SplitOptions, split_dataset

RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _split(in_json, out_dir, **options) -> dict:
    return split_dataset(in_json=in_json, out_dir=out_dir, options=SplitOptions(**options))


def _split_of_images(folder):
    """file name → split, and the loaded parts."""
    where, parts = {}, {}
    for name in SPLITS:
        parts[name] = manifest.load_dataset(folder / f"{name}.json")
        for image in parts[name]["images"]:
            where[image["id"]] = name
    return where, parts


@pytest.fixture(scope="module")
def thermal_clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("thermal")
    from conftest import THERMAL

    source = {"format": "yolo", "path": str(THERMAL), "group_regex": r"^(IMG_\d+)"}
    collect_dataset(options=CollectOptions(source=source), out_dir=root / "raw")
    clean_dataset(in_json=root / "raw" / "dataset.json", out_dir=root / "clean")
    return root / "clean" / "dataset.json"


def test_thermal_near_duplicates_never_cross_splits(thermal_clean, tmp_path):
    report = _split(thermal_clean, tmp_path / "s", **RATIOS, seed=0)
    assert report["groups_crossing_splits"] == 0
    where, parts = _split_of_images(tmp_path / "s")
    clean = manifest.load_dataset(thermal_clean)
    folder = manifest.image_dir(thermal_clean, clean)
    hashes = {
        im["id"]: perceptual_hash(Image.open(folder / im["file_name"])) for im in clean["images"]
    }
    close = [
        (a, b)
        for a, b in itertools.combinations(hashes, 2)
        if (hashes[a] ^ hashes[b]).bit_count() <= 4
    ]
    assert len(close) >= 20  # the dataset's burst near-duplicates (24 pairs at distance <= 4)
    crossing = [(a, b) for a, b in close if where[a] != where[b]]
    assert crossing == []
    assert all(parts[s]["images"] for s in SPLITS)


def test_same_seed_same_bytes_other_seed_other_split(thermal_clean, tmp_path):
    for run in ("a", "b"):
        _split(thermal_clean, tmp_path / run, **RATIOS, seed=0)
    _split(thermal_clean, tmp_path / "c", **RATIOS, seed=1)
    for name in SPLITS:
        a, b, c = (sha256_file(tmp_path / r / f"{name}.json") for r in "abc")
        assert a == b
    assert any(
        sha256_file(tmp_path / "a" / f"{n}.json") != sha256_file(tmp_path / "c" / f"{n}.json")
        for n in SPLITS
    )


def _video_dataset(root, videos=12, frames=10):
    """A canonical dataset of frames: one group per video, labelled frames and negatives."""
    (root / "images").mkdir(parents=True)
    ds = manifest.new_dataset(class_names=["car", "bike"])
    rng = np.random.default_rng(0)
    for v, f in itertools.product(range(videos), range(frames)):
        image = manifest.add_image(
            ds,
            file_name=f"v{v}_{f}.png",
            width=64,
            height=48,
            source=f"video{v}.mp4#{f}",
            group=f"video{v}.mp4",
        )
        if f % 4:
            manifest.add_box(
                ds, image_id=image, category_id=int(rng.integers(1, 3)), xywh=[4, 4, 20, 20]
            )
    manifest.save_dataset(ds, root / "dataset.json", image_dir=root / "images")
    return root / "dataset.json"


def test_no_video_spans_two_splits(tmp_path):
    dataset_json = _video_dataset(tmp_path / "clean")
    report = _split(dataset_json, tmp_path / "s", **RATIOS, seed=3)
    assert report["groups_crossing_splits"] == 0
    _, parts = _split_of_images(tmp_path / "s")
    videos = defaultdict(set)
    for name, part in parts.items():
        for image in part["images"]:
            videos[image["source"].split("#")[0]].add(name)
    assert len(videos) == 12 and all(len(sides) == 1 for sides in videos.values())


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    collect_dataset(
        options=CollectOptions(
            source={
                "format": "synthetic",
                "num_images": 600,
                "image_size": 32,
                "classes": ["circle", "square", "triangle"],
                "seed": 7,
            }
        ),
        out_dir=root / "raw",
    )
    return root / "raw" / "dataset.json"


def test_class_and_negative_shares_within_5_points(multiclass, tmp_path):
    report = _split(multiclass, tmp_path / "s", **RATIOS, seed=0)
    assert report["images"] == 600
    totals = defaultdict(int)
    for name in SPLITS:
        for label, n in report[name]["images_with_class"].items():
            totals[label] += n
    assert set(totals) == {"circle", "square", "triangle", "(negative)"}
    for name in SPLITS:
        for label, total in totals.items():
            share = report[name]["images_with_class"].get(label, 0) / total
            assert abs(share - RATIOS[name]) <= 0.05, (name, label, share)
    assert report["max_class_share_deviation_pp"] <= 5


def test_kfold_folds_partition_the_non_test_data(multiclass, tmp_path):
    folds, tests, vals = 4, [], []
    for fold in range(folds):
        out = tmp_path / f"fold{fold}"
        _split(multiclass, out, **RATIOS, seed=0, mode="kfold", folds=folds, fold=fold)
        where, _ = _split_of_images(out)
        tests.append({i for i, s in where.items() if s == "test"})
        vals.append({i for i, s in where.items() if s == "val"})
        train = {i for i, s in where.items() if s == "train"}
        assert train == set(where) - tests[-1] - vals[-1]
    everything = set(where)
    assert all(t == tests[0] for t in tests) and tests[0]
    assert set().union(*vals) == everything - tests[0]
    assert sum(len(v) for v in vals) == len(everything - tests[0])  # pairwise disjoint
    assert all(abs(len(v) / len(everything - tests[0]) - 1 / folds) < 0.05 for v in vals)


def test_predefined_keeps_the_source_split_and_reports_its_leaks(thermal_clean, tmp_path):
    report = _split(thermal_clean, tmp_path / "s", **RATIOS, seed=0, mode="predefined")
    assert (report["train"]["images"], report["val"]["images"], report["test"]["images"]) == (
        142,
        41,
        20,
    )
    assert report["groups_crossing_splits"] > 0  # Roboflow's own split leaks bursts


def test_a_class_that_cannot_be_placed_is_named(tmp_path):
    dataset_json = _video_dataset(tmp_path / "clean", videos=12)
    ds = manifest.load_dataset(dataset_json)
    ds["categories"].append({"id": 3, "name": "tram"})
    for image_id in (1, 11):  # frames of video0 and video1 only
        manifest.add_box(ds, image_id=image_id, category_id=3, xywh=[1, 1, 5, 5])
    manifest.save_dataset(ds, dataset_json, image_dir=tmp_path / "clean" / "images")
    with pytest.raises(DataError, match=r"class 'tram' is in 2 group\(s\), fewer than the 3"):
        _split(dataset_json, tmp_path / "s", **RATIOS, seed=0)
    report = _split(dataset_json, tmp_path / "s", **RATIOS, seed=0, require_all_classes=False)
    assert report["groups_crossing_splits"] == 0


def test_empty_split_is_a_clear_error(tmp_path):
    source = {"format": "synthetic", "num_images": 2, "image_size": 32, "classes": ["circle"]}
    collect_dataset(options=CollectOptions(source={**source, "seed": 0}), out_dir=tmp_path / "raw")
    with pytest.raises(DataError, match="would be empty|fewer than the 3"):
        _split(tmp_path / "raw" / "dataset.json", tmp_path / "s", **RATIOS, seed=0)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"train": 0.8, "val": 0.3, "test": 0.1}, "sum to 1.2"),
        ({"train": -0.1, "val": 0.6, "test": 0.5}, "split.train=-0.1 must be a number >= 0"),
        ({"train": "a", "val": 0.5, "test": 0.5}, "split.train='a' must be a number"),
        ({"mode": "stratified"}, "split.mode='stratified'.*random, predefined, kfold"),
        ({"mode": "kfold", "folds": 1}, "split.folds=1"),
        ({"mode": "kfold", "folds": 3, "fold": 3}, r"split.fold=3 must be an integer in 0..2"),
        ({"fold": 1.0}, r"split.fold=1.0 must be an integer"),
        ({"ratio": 0.5}, "split.ratio is not a split option; allowed: fold, folds, mode, "),
    ],
)
def test_bad_split_config_names_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        SplitOptions.from_config({**RATIOS, "seed": 0, **config})


def test_unlabelled_frames_are_held_out_not_used_as_negatives(tmp_path):
    dataset_json = _video_dataset(tmp_path / "clean", videos=12)
    ds = manifest.load_dataset(dataset_json)
    for image in ds["images"][-10:]:  # the last video: frames kept for later labelling
        image["labelled"] = False
    manifest.save_dataset(ds, dataset_json, image_dir=tmp_path / "clean" / "images")
    report = _split(dataset_json, tmp_path / "s", **RATIOS, seed=0)
    assert report["unlabelled_held_out"] == 10
    assert sum(report[name]["images"] for name in SPLITS) == 110
