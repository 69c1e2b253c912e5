"""What a model costs (detflow.evaluate.cost): FLOPs in total and per part."""

from __future__ import annotations

import pytest
import torch

from detflow.evaluate.cost import flops_by_part, model_cost
from detflow.model.build import build_model


def test_fcos_compute_splits_into_trunk_fpn_and_a_head_by_level():
    model = build_model(name="fcos_mobilenet_v2", num_classes=2, min_size=416, max_size=416)
    image = torch.rand(3, 416, 416)  # 416 / 64: a 7 × 7 map
    split = flops_by_part(model, image)
    parts = split["parts"]
    assert split["total"] == pytest.approx(model_cost(model, image)["gflops_per_image"], abs=1e-3)
    assert parts["backbone"] == pytest.approx(
        parts["backbone.body"] + parts["backbone.fpn"], abs=2e-3
    )
    assert split["total"] == pytest.approx(parts["backbone"] + parts["head"], abs=2e-3)
    levels = split["head_by_level"]
    assert list(levels) == ["stride 8", "stride 16", "stride 32", "stride 64"]
    assert sum(levels.values()) == pytest.approx(parts["head"], abs=2e-3)
    assert levels["stride 8"] == pytest.approx(4 * levels["stride 16"], rel=0.01)  # 4× the area


def test_a_single_level_model_has_no_head_by_level():
    model = build_model(name="fasterrcnn_mobilenet_v2", num_classes=2, min_size=160, max_size=160)
    split = flops_by_part(model, torch.rand(3, 160, 160))
    assert "head_by_level" not in split and split["parts"]["rpn"] > 0
