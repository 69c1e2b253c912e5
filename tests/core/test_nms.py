"""The one NumPy NMS (core/nms.py): hard NMS and soft-NMS on hand-computed cases."""

import numpy as np
import pytest

from detflow.core.nms import batched_nms, soft_nms

# A scores 0.9; B overlaps A with IoU 0.6 and scores 0.8; C is apart and scores 0.7.
BOXES = np.array([[0, 0, 10, 10], [0, 0, 10, 6], [50, 50, 60, 60]], np.float32)
SCORES = np.array([0.9, 0.8, 0.7], np.float32)
OPTIONS = {"sigma": 0.5, "iou_threshold": 0.5, "score_threshold": 0.05, "max_detections": 10}


def test_hard_nms_drops_the_overlapping_box_of_its_class_only():
    assert batched_nms(BOXES, SCORES, None, 0.5).tolist() == [0, 2]
    assert batched_nms(BOXES, SCORES, np.array([1, 2, 1]), 0.5).tolist() == [0, 1, 2]


def test_gaussian_soft_nms_decays_by_exp_of_the_squared_iou():
    keep, scores = soft_nms(BOXES, SCORES, method="gaussian", **OPTIONS)
    assert keep.tolist() == [0, 2, 1]  # B decayed below C
    assert scores[1] == pytest.approx(0.8 * np.exp(-(0.6**2) / 0.5), rel=1e-6)
    assert scores[[0, 2]].tolist() == pytest.approx([0.9, 0.7])
    assert scores.dtype == np.float32


def test_linear_soft_nms_decays_above_the_iou_only():
    keep, scores = soft_nms(BOXES, SCORES, method="linear", **OPTIONS)
    assert keep.tolist() == [0, 2, 1]
    assert scores[1] == pytest.approx(0.8 * (1 - 0.6), rel=1e-6)
    _, scores = soft_nms(BOXES, SCORES, method="linear", **{**OPTIONS, "iou_threshold": 0.7})
    assert scores[1] == pytest.approx(0.8)


def test_soft_nms_stops_at_the_score_threshold_and_max_detections():
    keep, _ = soft_nms(BOXES, SCORES, method="linear", **{**OPTIONS, "score_threshold": 0.5})
    assert keep.tolist() == [0, 2]  # B's 0.32 is below 0.5
    keep, _ = soft_nms(BOXES, SCORES, method="gaussian", **{**OPTIONS, "max_detections": 1})
    assert keep.tolist() == [0]


def test_soft_nms_names_the_allowed_methods():
    with pytest.raises(ValueError, match="gaussian, linear"):
        soft_nms(BOXES, SCORES, method="hard", **OPTIONS)
