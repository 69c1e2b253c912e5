"""The data report (detflow.data.box_stats) on a fixture with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from detflow.data import manifest
from detflow.data.box_stats import data_report, input_boxes, resized_size


def _dataset():
    """Three 100×100 images: two overlapping 10×20 boxes (IoU 1/3), one 40×10 box, none."""
    dataset = manifest.new_dataset(class_names=["a", "b"])
    first = manifest.add_image(
        dataset, file_name="1.png", width=100, height=100, source="s", group="1"
    )
    manifest.add_box(dataset, image_id=first, category_id=1, xywh=[0, 0, 10, 20])
    manifest.add_box(dataset, image_id=first, category_id=1, xywh=[5, 0, 10, 20])
    second = manifest.add_image(
        dataset, file_name="2.png", width=100, height=100, source="s", group="2"
    )
    manifest.add_box(dataset, image_id=second, category_id=2, xywh=[50, 50, 40, 10])
    manifest.add_image(dataset, file_name="3.png", width=100, height=100, source="s", group="3")
    return dataset


def test_resized_size_follows_torchvisions_transform():
    assert resized_size(640, 480, min_size=416, max_size=416) == (312, 416)
    assert resized_size(480, 640, min_size=416, max_size=800) == (554, 416)
    assert resized_size(100, 50, min_size=300, max_size=300, fixed_size=True) == (300, 300)


def test_input_boxes_are_scaled_to_the_input():
    images = input_boxes(_dataset(), min_size=200, max_size=200)
    assert [im.size for im in images] == [(200, 200)] * 3
    np.testing.assert_allclose(images[0].boxes, [[0, 0, 20, 40], [10, 0, 30, 40]])
    np.testing.assert_allclose(images[1].boxes, [[100, 100, 180, 120]])
    assert images[2].boxes.shape == (0, 4)
    assert images[1].labels.tolist() == [2]


def test_data_report_known_answers():
    report = data_report(_dataset(), min_size=200, max_size=200, densest=2)
    assert report["images"] == 3 and report["boxes"] == 3
    assert report["boxes_per_image"] == {"mean": 1.0, "median": 1.0, "p95": 1.9, "max": 2}
    assert report["densest_images"] == [
        {"file_name": "1.png", "boxes": 2},
        {"file_name": "2.png", "boxes": 1},
    ]
    # sqrt(w·h) at 2× scale: 28.28, 28.28, 40
    assert report["box_size_px"]["p50"] == pytest.approx(28.2843, abs=1e-4)
    assert report["box_size_rel"]["p50"] == pytest.approx(28.2843 / 200, abs=1e-4)
    assert report["small_box_share"] == pytest.approx(2 / 3, abs=1e-4)
    # h / w: 2, 2, 0.25
    assert report["aspect_ratio"]["p50"] == 2.0
    assert report["objects_per_class"] == {"a": 2, "b": 1}
    assert report["overlap"]["share_touching"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["overlap"]["share_iou_over_0.5"] == 0.0


def test_data_report_of_an_empty_dataset():
    report = data_report(manifest.new_dataset(class_names=["a"]), min_size=64, max_size=64)
    assert report["boxes"] == 0 and report["boxes_per_image"]["max"] == 0
    assert report["objects_per_class"] == {"a": 0}
