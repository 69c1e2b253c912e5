"""Sliced inference (detflow.deploy.slicing): tiles through the batch axis in chunks, boxes
back in full-image pixels, one box for an object cut by a seam, small and huge images."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from detflow.core.errors import ConfigError
from detflow.deploy.slicing import sliced_predict

SETTINGS = {
    "size": 512,
    "overlap": 64,
    "with_full_image": False,
    "merge": "nms",
    "iou": 0.5,
    "max_detections": 100,
}


class WhiteBoxDetector:
    """A stand-in model with known answers: in each image, the bounding box of its white
    (255) pixels as one detection of class 1, scored by how many of them there are (a cut
    object scores lower than the whole one). Records the batches it was given."""

    def __init__(self):
        self.batches: list[list[np.ndarray]] = []

    def __call__(self, images: list[np.ndarray]) -> list[dict]:
        self.batches.append(images)
        return [self._detect(image) for image in images]

    @staticmethod
    def _detect(image: np.ndarray) -> dict:
        ys, xs = np.nonzero((image == 255).all(axis=2))
        if not len(xs):
            return {"boxes": np.zeros((0, 4)), "labels": np.zeros(0), "scores": np.zeros(0)}
        box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
        score = min(1.0, len(xs) / 1600)
        return {"boxes": np.array(box, float), "labels": np.array([1]), "scores": np.array([score])}


def _image_with_object(width, height, box):
    image = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    return image


@pytest.mark.parametrize("merge", ["nms", "wbf"])
def test_an_object_cut_by_a_seam_gives_one_box(merge):
    # windows along x: 0, 244, 488; the object spans the seam at x = 512 of the first tile
    image = _image_with_object(1000, 512, (490, 100, 530, 140))
    detector = WhiteBoxDetector()
    out = sliced_predict(image, detector, **{**SETTINGS, "merge": merge})
    assert out["tiles"] == 3 and len(detector.batches) == 1  # the tiles as one batch
    assert len(out["boxes"]) == 1 and out["labels"].tolist() == [1]
    assert out["boxes"].dtype == np.float32 and out["scores"][0] == pytest.approx(1.0)
    if merge == "nms":  # the whole view wins
        np.testing.assert_allclose(out["boxes"][0], [490, 100, 530, 140])
    else:  # the score-weighted mean of two whole views (1.0) and the cut one (22 of 40 px)
        cut = 22 * 40 / 1600
        x1 = (530 * 2 + 512 * cut) / (2 + cut)
        np.testing.assert_allclose(out["boxes"][0], [490, 100, x1, 140], rtol=1e-5)


def test_without_merging_the_seam_gives_several_boxes():
    """The check above can fail: a threshold no overlap passes keeps every view."""
    image = _image_with_object(1000, 512, (490, 100, 530, 140))
    out = sliced_predict(image, WhiteBoxDetector(), **{**SETTINGS, "iou": 1.0})
    assert len(out["boxes"]) == 3  # whole in tiles 1 and 2, cut in tile 0


def test_iou_alone_misses_a_cut_view_that_ios_merges():
    image = _image_with_object(1000, 512, (500, 100, 540, 140))  # 12 of 40 px in tile 0
    out = sliced_predict(image, WhiteBoxDetector(), **{**SETTINGS, "metric": "iou"})
    assert len(out["boxes"]) == 2  # IoU of the cut view with the whole one: 0.3
    out = sliced_predict(image, WhiteBoxDetector(), **SETTINGS)
    assert len(out["boxes"]) == 1


def test_an_image_smaller_than_a_tile_is_one_padded_tile():
    image = _image_with_object(300, 200, (250, 150, 300, 200))
    detector = WhiteBoxDetector()
    out = sliced_predict(image, detector, **{**SETTINGS, "with_full_image": True})
    assert out["tiles"] == 1 and len(detector.batches) == 1  # no full-image pass: it is the tile
    (tile,) = detector.batches[0]
    assert tile.shape == (512, 512, 3) and not tile[200:].any() and not tile[:, 300:].any()
    np.testing.assert_allclose(out["boxes"], [[250, 150, 300, 200]])


def test_boxes_in_the_padding_are_clipped_to_the_image():
    def padded_box(images):
        box = np.array([[280.0, 180.0, 400.0, 260.0], [350.0, 10.0, 400.0, 50.0]])
        return [{"boxes": box, "labels": np.array([1, 1]), "scores": np.array([0.9, 0.8])}]

    out = sliced_predict(np.zeros((200, 300, 3), np.uint8), padded_box, **SETTINGS)
    np.testing.assert_allclose(out["boxes"], [[280, 180, 300, 200]])  # the second is all padding


def test_the_full_image_pass_is_downscaled_and_mapped_back():
    image = _image_with_object(1000, 512, (100, 100, 700, 400))  # larger than a tile
    detector = WhiteBoxDetector()

    def whole_image_only(images):  # the model sees the object only in the downscaled image
        return [
            detector._detect(im) if im.shape != (512, 512, 3) else detector._detect(im * 0)
            for im in images
        ]

    seen = []
    out = sliced_predict(
        image,
        lambda ims: seen.append(ims) or whole_image_only(ims),
        **{**SETTINGS, "with_full_image": True},
    )
    assert [len(batch) for batch in seen] == [3, 1] and seen[1][0].shape == (262, 512, 3)
    assert len(out["boxes"]) == 1
    np.testing.assert_allclose(out["boxes"][0], [100, 100, 700, 400], atol=1000 / 512)


def test_a_50_megapixel_image_goes_through_in_bounded_chunks():
    image = np.zeros((7000, 7000, 3), dtype=np.uint8)  # 49 MP
    detector = WhiteBoxDetector()
    out = sliced_predict(image, detector, **{**SETTINGS, "with_full_image": True}, batch_size=24)
    assert out["tiles"] == 16 * 16 and len(out["boxes"]) == 0
    sizes = [len(batch) for batch in detector.batches]
    assert sizes == [24] * 10 + [16] + [1]  # 256 tiles in chunks of 24, then the whole image
    tiles = [tile for batch in detector.batches[:-1] for tile in batch]
    assert all(t.shape == (512, 512, 3) and np.shares_memory(t, image) for t in tiles)  # views
    assert detector.batches[-1][0].shape == (512, 512, 3)


def test_max_detections_keeps_the_best():
    def many(images):
        boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(20)], float)
        return [{"boxes": boxes, "labels": np.ones(20), "scores": np.linspace(0.1, 0.9, 20)}]

    out = sliced_predict(
        np.zeros((400, 400, 3), np.uint8), many, **{**SETTINGS, "max_detections": 5}
    )
    np.testing.assert_allclose(out["scores"], np.linspace(0.1, 0.9, 20)[::-1][:5], rtol=1e-6)


def test_bad_calls_raise_with_the_key():
    image = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(ConfigError, match="slicing.merge"):
        sliced_predict(image, WhiteBoxDetector(), **{**SETTINGS, "merge": "soft"})
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        sliced_predict(image.astype(np.float32), WhiteBoxDetector(), **SETTINGS)
    with pytest.raises(ValueError, match="returned 0 outputs for 1 tiles"):
        sliced_predict(image, lambda tiles: [], **SETTINGS)


def test_slicing_runs_without_torch():
    """The serving path slices: importing and running it loads no torch."""
    code = (
        "import sys, numpy as np\n"
        "from detflow.deploy.slicing import sliced_predict\n"
        "out = sliced_predict(np.zeros((900, 700, 3), np.uint8), lambda tiles: [\n"
        "    {'boxes': np.zeros((0, 4)), 'labels': [], 'scores': []} for _ in tiles],\n"
        "    size=512, overlap=64, with_full_image=True, merge='wbf', iou=0.5,"
        " max_detections=10)\n"
        "assert out['tiles'] == 4, out\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
