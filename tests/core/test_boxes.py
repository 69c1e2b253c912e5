import numpy as np
import pytest

from detflow.core.boxes import (
    box_area,
    box_ios,
    box_iou,
    exif_orient_xyxy,
    xywh_to_xyxy,
    xyxy_to_xywh,
    xyxy_to_yolo,
    yolo_to_xyxy,
)


def test_coco_roundtrip():
    xyxy = np.array([[10, 20, 50, 80], [0, 0, 1, 1]], dtype=float)
    assert np.allclose(xywh_to_xyxy(xyxy_to_xywh(xyxy)), xyxy)
    assert xyxy_to_xywh(xyxy)[0].tolist() == [10, 20, 40, 60]


def test_yolo_roundtrip_and_known_values():
    yolo = np.array([[0.5, 0.5, 0.2, 0.4]])
    xyxy = yolo_to_xyxy(yolo, width=200, height=100)
    assert xyxy[0].tolist() == pytest.approx([80, 30, 120, 70])
    assert np.allclose(xyxy_to_yolo(xyxy, width=200, height=100), yolo, atol=1e-12)


def test_iou():
    a = [[0, 0, 10, 10]]
    assert box_iou(a, [[0, 0, 10, 10]])[0, 0] == pytest.approx(1.0)
    assert box_iou(a, [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    assert box_iou(a, [[20, 20, 30, 30]])[0, 0] == 0.0


def test_ios_is_one_for_a_box_inside_another():
    whole, cut = [[0, 0, 40, 40]], [[0, 0, 12, 40]]  # a box and its part left of a seam
    assert box_ios(whole, cut)[0, 0] == pytest.approx(1.0)
    assert box_iou(whole, cut)[0, 0] == pytest.approx(0.3)
    assert box_ios(whole, [[30, 0, 50, 10]])[0, 0] == pytest.approx(100 / 200)
    assert box_ios(whole, [[5, 5, 5, 9]])[0, 0] == 0.0  # an empty box overlaps nothing
    assert box_area([[0, 0, 2, 3], [5, 5, 4, 4]]).tolist() == [6.0, 0.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_iou_equals_torchvision(dtype):
    """The one NumPy IoU against ``torchvision.ops.box_iou`` on random boxes, touching,
    nested and degenerate (zero-area) ones included."""
    import torch
    from torchvision.ops import box_iou as torchvision_iou

    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, size=(60, 2, 2))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1).astype(dtype)
    boxes[:5, 2] = boxes[:5, 0]  # zero width
    boxes = np.concatenate([boxes, boxes[:10] + 0.5, boxes[10:20]])  # overlaps, duplicates
    ours = box_iou(boxes, boxes[::-1], dtype=dtype)
    theirs = torchvision_iou(torch.from_numpy(boxes), torch.from_numpy(boxes[::-1].copy()))
    theirs = np.nan_to_num(theirs.numpy())  # torchvision: 0/0 = nan for two empty boxes
    assert ours.dtype == dtype and ours.shape == (80, 80)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6 if dtype == np.float32 else 1e-12)
    assert (ours > 0).mean() > 0.1  # overlaps do occur


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil(orientation):
    """A box drawn on the stored image lands where PIL's exif_transpose moves its pixels."""
    from PIL import Image, ImageOps

    width, height = 40, 30
    pixels = np.zeros((height, width), dtype=np.uint8)
    pixels[5:12, 8:20] = 255  # box xyxy (8, 5, 20, 12)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    rotated = np.asarray(ImageOps.exif_transpose(image))
    ys, xs = np.nonzero(rotated)
    expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    got = exif_orient_xyxy([[8, 5, 20, 12]], orientation=orientation, width=width, height=height)
    assert got[0].tolist() == expected
