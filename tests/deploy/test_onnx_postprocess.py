"""The ONNX runtime's NumPy post-processing equals PyTorch's (torchvision NMS) on the same
candidates, for every NMS mode."""

import numpy as np
import pytest
import torch

from detflow.deploy import onnx_postprocess
from detflow.model import postprocess
from detflow.model.postprocess_config import PostprocessOptions

MODES = [
    {"nms": "class_aware", "soft_nms": "none"},
    {"nms": "class_agnostic", "soft_nms": "none"},
    {"nms": "class_aware", "soft_nms": "gaussian", "soft_nms_sigma": 0.5},
    {"nms": "class_agnostic", "soft_nms": "linear"},
]


def _candidates(seed: int, n: int = 200):
    """Clustered ``xyxy`` pixel boxes (so that NMS has work), scores and labels 0..3."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, 300, size=(12, 2))[rng.integers(0, 12, n)]
    centres += rng.normal(0, 6, size=(n, 2))
    sizes = rng.uniform(10, 60, size=(n, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    return boxes.astype(np.float32), scores, rng.integers(0, 4, n)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: f"{m['nms']}-{m['soft_nms']}")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_step_equals_torchvision(mode, seed):
    config = PostprocessOptions(score_threshold=0.05, nms_iou=0.5, max_detections=50, **mode)
    boxes, scores, labels = _candidates(seed)
    ours = onnx_postprocess.apply_postprocess(boxes, scores, labels, config=config)
    theirs = postprocess.apply_postprocess(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), config=config
    )
    assert len(ours["labels"]) > 5
    np.testing.assert_array_equal(ours["labels"], theirs["labels"].numpy())
    np.testing.assert_array_equal(ours["boxes"], theirs["boxes"].numpy())
    np.testing.assert_allclose(ours["scores"], theirs["scores"].numpy(), rtol=1e-6)
    assert (ours["labels"] >= 1).all()  # background dropped


def test_hard_nms_suppresses_above_the_iou_only():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 30, 30]], np.float32)
    keep = onnx_postprocess.batched_nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), None, 0.5)
    assert keep.tolist() == [0, 2]
    keep = onnx_postprocess.batched_nms(
        boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([1, 2, 1]), 0.5
    )
    assert keep.tolist() == [0, 1, 2]  # other class: not suppressed
