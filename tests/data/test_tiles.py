"""Tiles (detflow.data.tiles, tile_dataset): the grid, the choice, boxes cut by tile edges,
empty-tile sampling and byte-identical outputs, on generated images with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detflow.core.errors import ConfigError, DataError
from detflow.core.files import json_text
from detflow.core.images import PixelLimitError
from detflow.data import manifest
from detflow.data.tile_dataset import CUT, plan_tiles, sample_empty, tile_dataset
from detflow.data.tiles import (
    TileSpec,
    axis_starts,
    box_and_image_sizes,
    choose_tiles,
    tile_boxes,
    tile_windows,
)


@pytest.mark.parametrize(
    ("width", "height", "size", "overlap"),
    [(1000, 600, 512, 64), (4000, 3000, 640, 100), (513, 512, 512, 0), (2049, 77, 256, 255)],
)
def test_windows_cover_the_image_with_the_overlap_and_end_at_its_edges(
    width, height, size, overlap
):
    windows = tile_windows(width, height, size=size, overlap=overlap)
    covered = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in windows:
        assert x1 - x0 == min(size, width) and y1 - y0 == min(size, height)
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    xs = sorted({w[0] for w in windows})
    ys = sorted({w[1] for w in windows})
    for starts, length in ((xs, width), (ys, height)):
        assert starts[0] == 0 and starts[-1] + min(size, length) == length
        steps = np.diff(starts)
        assert (min(size, length) - steps >= overlap).all()  # neighbours share >= overlap px
    assert len(windows) == len(xs) * len(ys)


def test_axis_starts_known_answers():
    assert axis_starts(1000, size=512, overlap=64) == [0, 244, 488]  # ceil(936 / 448) = 3
    assert axis_starts(512, size=512, overlap=64) == [0]
    assert axis_starts(7000, size=512, overlap=64)[-1] == 7000 - 512
    assert len(axis_starts(7000, size=512, overlap=64)) == 16


def test_an_image_smaller_than_a_tile_is_one_window():
    assert tile_windows(300, 200, size=512, overlap=64) == [(0, 0, 300, 200)]
    assert tile_windows(300, 900, size=512, overlap=64) == [(0, 0, 300, 512), (0, 388, 300, 900)]


@pytest.mark.parametrize(("size", "overlap"), [(512, 512), (0, 0), (512, -1), (512.0, 10)])
def test_bad_tile_geometry_is_a_config_error(size, overlap):
    with pytest.raises(ConfigError, match="tiles"):
        tile_windows(1000, 1000, size=size, overlap=overlap)


def test_tile_boxes_whole_kept_and_ignored():
    boxes = [[10, 10, 50, 50], [230, 100, 270, 140], [500, 300, 540, 340], [600, 0, 700, 50]]
    index, clipped, status = tile_boxes(boxes, (244, 0, 756, 512), min_visible=0.5)
    assert index.tolist() == [1, 2, 3]
    assert status.tolist() == ["kept", "whole", "whole"]  # 26/40 of the second is visible
    np.testing.assert_allclose(clipped[0], [0, 100, 26, 140])  # tile pixels
    index, _, status = tile_boxes(boxes, (0, 0, 512, 512), min_visible=0.5)
    assert index.tolist() == [0, 1, 2] and status.tolist() == ["whole", "whole", "ignored"]
    _, _, status = tile_boxes(boxes, (0, 0, 512, 512), min_visible=0.25)
    assert status.tolist() == ["whole", "whole", "kept"]  # 12/40 = 0.3 visible


def _sizes(box_px: float, image: tuple[int, int], count: int = 200):
    rng = np.random.default_rng(0)
    sides = rng.uniform(0.8, 1.2, size=(count, 2)) * box_px
    return sides, np.tile(image, (count, 1))


def test_choose_tiles_for_small_objects_in_large_images():
    sizes, images = _sizes(20, (4000, 3000))
    spec, reason = choose_tiles(sizes, images, min_size=512, max_size=512, min_object_px=16)
    p99 = int(np.ceil(np.quantile(sizes.max(axis=1), 0.99)))
    assert spec == TileSpec(512, p99)
    assert "tiles of 512 px" in reason and "100.0% of boxes fit whole" in reason


def test_choose_tiles_caps_the_overlap_at_half_a_tile():
    sizes, images = _sizes(20, (4000, 3000))
    sizes[:10] = 400  # a few large objects among many small ones
    spec, reason = choose_tiles(sizes, images, min_size=512, max_size=512, min_object_px=16)
    assert spec == TileSpec(512, 256)
    assert "95.0% of boxes fit whole" in reason


def test_choose_tiles_none_when_objects_are_large_enough():
    sizes, images = _sizes(200, (1600, 1200))
    spec, reason = choose_tiles(sizes, images, min_size=512, max_size=512, min_object_px=16)
    assert spec is None and "whole images" in reason and "0% of boxes under 16 px" in reason


def test_choose_tiles_none_when_images_already_reach_the_input_unshrunk():
    sizes, images = _sizes(6, (640, 480))
    spec, reason = choose_tiles(sizes, images, min_size=512, max_size=640, min_object_px=16)
    assert spec is None and "enlarge them only" in reason


def test_choose_tiles_without_boxes_and_with_mismatched_inputs():
    assert choose_tiles([], [], min_size=512, max_size=512, min_object_px=16)[0] is None
    with pytest.raises(ValueError, match="one per box"):
        choose_tiles([[1, 1]], [], min_size=512, max_size=512, min_object_px=16)
    with pytest.raises(ConfigError, match="min_object_px"):
        choose_tiles([[1, 1]], [[9, 9]], min_size=512, max_size=512, min_object_px=0)
    with pytest.raises(ConfigError, match="fit_quantile"):
        choose_tiles(
            [[1, 1]], [[9, 9]], min_size=512, max_size=512, min_object_px=8, fit_quantile=2
        )


def test_choose_tiles_per_box_scale_with_mixed_image_sizes():
    """Each box is measured at its own image's input scale: tiny boxes in large images
    count as small, the same boxes in images at the input size do not."""
    sizes = np.full((8, 2), 20.0)
    images = np.array([[4000, 3000]] * 6 + [[512, 384]] * 2)
    spec, reason = choose_tiles(sizes, images, min_size=512, max_size=512, min_object_px=16)
    assert spec == TileSpec(512, 20) and reason.startswith("75% of boxes under 16 px")


# The fixture: image "a" 1000×512 (windows x 0, 244, 488), "b" 1000×512 without boxes,
# "c" 300×200 (one padded tile). Boxes of "a" and where they fall (min_visible 0.5):
#   A [10,10,50,50]     whole in w0
#   B [230,100,270,140] whole in w0, kept in w1 (26/40 visible)
#   C [480,200,520,240] kept in w0 (32/40), whole in w1, kept in w2 (32/40)
#   D [500,300,540,340] ignored in w0 (12/40), whole in w1 and w2
#   E [700,400,720,420] difficult: carried ignored in w1 and w2
A_BOXES = {
    "A": [10, 10, 50, 50],
    "B": [230, 100, 270, 140],
    "C": [480, 200, 520, 240],
    "D": [500, 300, 540, 340],
    "E": [700, 400, 720, 420],
}


IMAGES = (("a", 1000, 512, "g1"), ("b", 1000, 512, "g2"), ("c", 300, 200, "g3"))


def _dataset() -> dict:
    dataset = manifest.new_dataset(class_names=["car", "person"])
    for name, width, height, group in IMAGES:
        manifest.add_image(
            dataset, file_name=f"{name}.png", width=width, height=height, source="s", group=group
        )
    for key, (x0, y0, x1, y1) in A_BOXES.items():
        ignore = "difficult" if key == "E" else None
        xywh = [x0, y0, x1 - x0, y1 - y0]
        manifest.add_box(dataset, image_id=1, category_id=1, xywh=xywh, ignore=ignore)
    manifest.add_box(dataset, image_id=3, category_id=2, xywh=[10, 10, 50, 50])
    return dataset


@pytest.fixture()
def images_dir(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    folder.mkdir()
    for name, width, height, _ in IMAGES:
        pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return folder


def _tile(images_dir: Path, out: str, dataset: dict | None = None, **options):
    settings = {"size": 512, "overlap": 64, "empty_rate": 0.0, "seed": 0, **options}
    return tile_dataset(
        dataset or _dataset(), images_dir=images_dir, out_dir=images_dir.parent / out, **settings
    )


def test_counts_whole_kept_ignored_and_empty(images_dir):
    tiled, counts = _tile(images_dir, "tiles")
    assert counts == {
        "images_in": 3,
        "tiles": 7,  # 3 + 3 + 1
        "boxes_in": 5,  # A-D and the box of "c"
        "boxes_never_whole": 0,
        "tiles_out": 4,
        "boxes_whole": 6,  # A, B (w0); C, D (w1); D (w2); the box of "c"
        "boxes_cut_kept": 3,  # C (w0), B (w1), C (w2)
        "boxes_cut_ignored": 1,  # D (w0)
        "boxes_ignored_in": 2,  # E in w1 and w2
        "empty_tiles_kept": 0,
        "empty_tiles_dropped": 3,  # the three tiles of "b"
    }
    assert len(tiled["images"]) == 4
    assert sum(1 for a in tiled["annotations"] if a.get("ignore") == CUT) == 1
    assert sum(1 for a in tiled["annotations"] if a.get("ignore") == "difficult") == 2


def test_tiles_record_their_source_and_boxes_in_tile_pixels(images_dir):
    tiled, _ = _tile(images_dir, "tiles")
    w1 = next(im for im in tiled["images"] if im["tile"]["window"] == [244, 0, 756, 512])
    assert w1["tile"] == {"image_id": 1, "file_name": "a.png", "window": [244, 0, 756, 512]}
    assert (w1["width"], w1["height"], w1["group"]) == (512, 512, "g1")
    boxes = {tuple(a["bbox"]) for a in tiled["annotations"] if a["image_id"] == w1["id"]}
    assert (236.0, 200.0, 40.0, 40.0) in boxes  # C, whole, shifted by x0 = 244
    assert (0.0, 100.0, 26.0, 40.0) in boxes  # B, cut and kept
    cut = next(a for a in tiled["annotations"] if a.get("ignore") == CUT)
    assert cut["bbox"] == [500.0, 300.0, 12.0, 40.0] and cut["iscrowd"] == 0
    assert manifest.is_ignored(cut)


def test_tile_pixels_are_the_source_window_padded_with_black(images_dir, tmp_path):
    tiled, _ = _tile(images_dir, "tiles")
    source = np.asarray(Image.open(images_dir / "a.png"))
    w1 = next(im for im in tiled["images"] if im["tile"]["window"] == [244, 0, 756, 512])
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "tiles" / w1["file_name"])), source[:, 244:756]
    )
    small = next(im for im in tiled["images"] if im["tile"]["file_name"] == "c.png")
    pixels = np.asarray(Image.open(tmp_path / "tiles" / small["file_name"]))
    assert pixels.shape == (512, 512, 3)
    np.testing.assert_array_equal(pixels[:200, :300], np.asarray(Image.open(images_dir / "c.png")))
    assert not pixels[200:].any() and not pixels[:, 300:].any()


def test_fill_ignored_paints_the_cut_box_but_not_trainable_boxes(images_dir, tmp_path):
    tiled, _ = _tile(images_dir, "tiles", fill_ignored=128)
    w0 = next(im for im in tiled["images"] if im["tile"]["window"] == [0, 0, 512, 512])
    pixels = np.asarray(Image.open(tmp_path / "tiles" / w0["file_name"]))
    source = np.asarray(Image.open(images_dir / "a.png"))
    assert (pixels[300:340, 500:512] == 128).all()  # D's visible part
    np.testing.assert_array_equal(pixels[:300], source[:300, :512])  # A, B, C untouched


def test_empty_tiles_are_sampled_at_the_rate_by_seed(images_dir):
    runs = {}
    for rate, seed in ((1.0, 0), (0.5, 0), (0.5, 0), (0.5, 3), (0.34, 0)):
        tiled, counts = _tile(images_dir, f"out_{rate}_{seed}", empty_rate=rate, seed=seed)
        assert counts["empty_tiles_kept"] == round(rate * 3)
        assert counts["empty_tiles_kept"] + counts["empty_tiles_dropped"] == 3
        assert counts["tiles_out"] == 4 + counts["empty_tiles_kept"]
        names = sorted(im["file_name"] for im in tiled["images"] if im["tile"]["image_id"] == 2)
        runs.setdefault((rate, seed), []).append(names)
    assert runs[(0.5, 0)][0] == runs[(0.5, 0)][1]  # the same seed, the same tiles
    assert len(runs[(1.0, 0)][0]) == 3 and len(runs[(0.34, 0)][0]) == 1


def test_the_seed_decides_which_empty_tiles_stay():
    jobs, _ = plan_tiles(_dataset(), size=512, overlap=64, min_visible=0.5)
    drawn = {tuple(sorted(sample_empty(jobs, empty_rate=0.34, seed=s))) for s in range(8)}
    assert len(drawn) == 3  # one of the three empty tiles of "b", each drawn by some seed


def test_two_runs_are_byte_identical(images_dir, tmp_path):
    first, _ = _tile(images_dir, "one", empty_rate=0.5, seed=7)
    second, _ = _tile(images_dir, "two", empty_rate=0.5, seed=7)
    assert json_text(first) == json_text(second)
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    assert len(names) == 6 and all(not n.startswith(".") for n in names)  # no temp leftovers
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_a_box_larger_than_a_tile_is_never_whole(images_dir):
    dataset = _dataset()
    manifest.add_box(dataset, image_id=2, category_id=1, xywh=[200, 0, 600, 50])
    _, counts = _tile(images_dir, "tiles", dataset=dataset)
    assert counts["boxes_never_whole"] == 1 and counts["boxes_in"] == 6
    assert counts["boxes_cut_kept"] == 3 + 3  # 312/600, 512/600, 312/600 visible


def test_pixel_limit_and_a_wrong_size_are_data_errors(images_dir):
    with pytest.raises(PixelLimitError, match="pixel limit"):
        _tile(images_dir, "tiles", max_pixels=100_000)
    dataset = _dataset()
    dataset["images"][0]["width"] = 999
    with pytest.raises(DataError, match="a.png: decoded 1000x512, but the dataset says 999x512"):
        _tile(images_dir, "bad", dataset=dataset)
    assert not (images_dir.parent / "bad").exists()  # nothing half-written


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"min_visible": 0}, "tiles.min_visible"),
        ({"min_visible": 1.5}, "tiles.min_visible"),
        ({"empty_rate": -0.1}, "tiles.empty_rate"),
        ({"seed": -1}, "tiles.seed"),
        ({"fill_ignored": 300}, "tiles.fill_ignored"),
        ({"overlap": 600}, "tiles.overlap"),
    ],
)
def test_bad_options_are_config_errors(images_dir, option, match):
    with pytest.raises(ConfigError, match=match):
        _tile(images_dir, "tiles", **option)


def test_box_and_image_sizes_leave_ignored_boxes_out():
    sizes, images = box_and_image_sizes(_dataset())
    assert sizes.tolist() == [[40, 40]] * 4 + [[50, 50]]
    assert images.tolist() == [[1000, 512]] * 4 + [[300, 200]]
