"""Best possible recall, anchor fitting and budgets (detflow.train.data_check) on fixtures
with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from detflow.data import manifest
from detflow.data.box_stats import InputBoxes
from detflow.model.build import build_model
from detflow.train import data_check


def _image(*boxes, size=(416, 416)):
    return InputBoxes(size, np.asarray(boxes, dtype=float).reshape(-1, 4), np.ones(len(boxes)), "x")


@pytest.fixture(scope="module")
def faster():
    return build_model(
        name="fasterrcnn_mobilenet_v2",
        num_classes=1,
        backbone_weights="none",
        min_size=416,
        max_size=416,
    )


@pytest.fixture(scope="module")
def fcos():
    return build_model(
        name="fcos_mobilenet_v2", num_classes=1, backbone_weights="none", min_size=416, max_size=416
    )


def test_anchor_grid_places_the_models_anchors(faster):
    anchors, per_level = data_check.AnchorGrid(faster).anchors((416, 400))
    # one stride-32 map of the 416×416 padded input, 5 sizes × 3 ratios per location
    assert per_level == [13 * 13 * 15] and anchors.shape == (13 * 13 * 15, 4)


def test_best_possible_recall_of_the_default_anchors(faster):
    # an exact anchor (128², centred on the stride-32 grid point (64, 64)): matched;
    # 10×10 (smaller than any anchor) and 20×300 (thinner than ratio 2): not
    image = _image([0, 0, 128, 128], [200, 200, 210, 210], [100, 50, 120, 350])
    assert data_check.matched_boxes(faster, [image]).tolist() == [True, False, False]
    assert data_check.best_possible_recall(faster, [image]) == pytest.approx(1 / 3, abs=1e-4)
    assert data_check.best_possible_recall(faster, [_image()]) == 1.0


def test_best_possible_recall_of_fcos_locations(fcos):
    # a 2×2 box holds no stride-8 location; a 100×100 box fits a level's range
    image = _image([1, 1, 3, 3], [0, 0, 100, 100])
    assert data_check.matched_boxes(fcos, [image]).tolist() == [False, True]


def test_fit_anchors_follows_the_boxes(faster):
    images = [_image([40, 40, 100, 400]) for _ in range(4)]  # 60×360: h/w 6
    assert data_check.best_possible_recall(faster, images) == 0.0
    sizes, ratios = data_check.fit_anchors(images)
    assert sizes == (147,) and ratios == (6.0,)  # sqrt(60·360) = 146.97
    model = build_model(name="fasterrcnn_mobilenet_v2", num_classes=1, backbone_weights="none")
    model.rpn.anchor_generator = data_check.single_level_generator(sizes, ratios)
    assert data_check.best_possible_recall(model, images) == 1.0


def test_rois_for_the_densest_images():
    assert data_check.rois_for(2, default=64) == 64
    assert data_check.rois_for(5, default=64) == 128  # 80 → next power of two
    assert data_check.rois_for(25, default=64) == 512
    assert data_check.rois_for(100, default=64) == 512  # capped


def test_check_data_reports_budgets_against_the_densest_images(faster):
    dataset = manifest.new_dataset(class_names=["a"])
    for i, count in enumerate([1, 2, 40]):
        image = manifest.add_image(
            dataset, file_name=f"{i}.png", width=416, height=416, source="s", group=str(i)
        )
        for k in range(count):
            manifest.add_box(dataset, image_id=image, category_id=1, xywh=[k, k, 128, 128])
    val = manifest.subset(dataset, [3])
    check = data_check.check_data(faster, dataset, val_dataset=val)
    assert check["data"]["boxes_per_image"]["max"] == 40
    assert check["val"] == {"images": 1, "max_boxes": 40}
    budgets = check["budgets"]
    assert budgets["rois_per_image"] == 64 and budgets["positive_rois_per_image"] == 16
    assert budgets["densest_boxes"] == 40 and budgets["max_detections"] == 100
    (warning,) = budgets["warnings"]
    assert "model.rois_per_image >= 1024" in warning
    assert "best possible recall" in data_check.summary_line(check)
