"""FCOS's structure keys (issue 38): ``head_conv``, ``fpn_channels`` and ``levels``.

The defaults are today's model exactly (checked against the builder as it was, written out
here from torchvision parts); each lighter candidate builds, trains and predicts on a 2-image
batch, exports to ONNX within the export gate's tolerances, and a checkpoint of it rebuilds
the same structure. Small inputs (128 px) keep them quick.
"""

import re

import pytest
import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from detflow.core.errors import ConfigError
from detflow.deploy.export import export_verified
from detflow.model.backbone import stages
from detflow.model.build import build_model
from detflow.model.checkpoint_file import SCHEMA
from detflow.model.mobilenet import freeze_and_fold, mobilenet_v2_features
from detflow.model.restore import load_checkpoint

from export_helpers import TINY_EXPORT

SIZE = 128
BASE = {"name": "fcos_mobilenet_v2", "backbone_weights": "none", "min_size": SIZE,
        "max_size": SIZE, "trainable_backbone_layers": 3}  # fmt: skip
CANDIDATES = {  # bench/model_cost.py --candidates, and the other code paths of the builder
    "depthwise": {"head_conv": "depthwise"},
    "depthwise_fpn64": {"head_conv": "depthwise", "fpn_channels": 64},
    "depthwise_fpn64_p3p5": {"head_conv": "depthwise", "fpn_channels": 64, "levels": [8, 16, 32]},
    "standard_fpn48": {"fpn_channels": 48},  # GroupNorm: 16 groups (48 is not divisible by 32)
    "levels_16_32": {"levels": [16, 32]},  # the trunk cut after its stride-32 stage
}


def _build(seed: int = 0, **config) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(**{**BASE, **config}, num_classes=2, score_threshold=0.0,
                       max_detections=20)  # fmt: skip


def _todays_fcos(num_classes: int) -> nn.Module:
    """The builder before issue 38, as it was (random trunk, 3 trainable stages)."""
    features = mobilenet_v2_features(None)
    backbone = BackboneWithFPN(features, {"6": "0", "13": "1", "18": "2"}, [32, 96, 1280], 128,
                               extra_blocks=LastLevelMaxPool())  # fmt: skip
    generator = AnchorGenerator(sizes=((8,), (16,), (32,), (64,)), aspect_ratios=((1.0,),) * 4)
    head = FCOSHead(128, 1, num_classes, num_convs=2)
    nn.init.constant_(head.regression_head.bbox_reg.bias, 1.0)
    model = FCOS(backbone, num_classes, anchor_generator=generator, head=head, min_size=SIZE,
                 max_size=SIZE, score_thresh=0.0, detections_per_img=20)  # fmt: skip
    return freeze_and_fold(model, 3)


def _images():
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, SIZE, SIZE, generator=generator),
            torch.rand(3, 96, 160, generator=generator)]  # fmt: skip


def _targets():
    boxes = [[8.0, 10.0, 70.0, 90.0], [30.0, 20.0, 120.0, 60.0]]
    return [{"boxes": torch.tensor([box]), "labels": torch.tensor([1])} for box in boxes]


def _spread_scores(model: nn.Module) -> nn.Module:
    """Untrained heads score every location alike; spread the class logits so that the
    detections kept (top 20) do not depend on how ties break (as the export tests do)."""
    with torch.no_grad():
        model.head.classification_head.cls_logits.weight.normal_(0, 0.5)
    return model


@pytest.mark.parametrize(
    "structure", [{}, {"head_conv": "standard", "fpn_channels": 128, "levels": [8, 16, 32, 64]}]
)
def test_the_defaults_are_todays_model_exactly(structure):
    """Same state_dict (keys, shapes, values: weights drawn in the same order) and the same
    outputs, eval and train, for the same seed; explicit defaults are the defaults."""
    ours = _build(**structure)
    torch.manual_seed(0)
    todays = _todays_fcos(3)
    mine, theirs = ours.state_dict(), todays.state_dict()
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert len(stages(ours)) == len(stages(todays)) == 6
    images = _images()
    with torch.no_grad():
        for a, b in zip(ours.eval()(images), todays.eval()(images), strict=True):
            assert all(torch.equal(a[k], b[k]) for k in b)
    losses = ours.train()(images, _targets())
    expected = todays.train()(images, _targets())
    assert all(torch.equal(losses[k], expected[k]) for k in expected)


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_a_candidate_trains_predicts_and_exports_with_parity(name, tmp_path):
    model = _spread_scores(_build(**CANDIDATES[name]))
    levels = CANDIDATES[name].get("levels", [8, 16, 32, 64])
    assert model.anchor_generator.sizes == tuple((s,) for s in levels)
    features = model.backbone(torch.zeros(1, 3, SIZE, SIZE))
    width = CANDIDATES[name].get("fpn_channels", 128)
    assert [tuple(f.shape[1:]) for f in features.values()] == [
        (width, SIZE // s, SIZE // s) for s in levels
    ]
    losses = model.train()(_images(), _targets())
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.head.parameters())
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        outputs = model.eval()(_images())
    assert all(len(o["scores"]) == 20 for o in outputs)
    report = export_verified(
        model=model, onnx_path=tmp_path / "model.onnx", images=_images(), **TINY_EXPORT
    )
    assert report["passed"] and report["max_box_error_px"] <= 1.0


def test_the_depthwise_head_is_depthwise_then_pointwise_with_group_norm():
    head = _build(head_conv="depthwise", fpn_channels=64).head
    for branch in (head.classification_head, head.regression_head):
        convs = [m for m in branch.conv.modules() if isinstance(m, nn.Conv2d)]
        assert [(c.kernel_size, c.groups) for c in convs] == [((3, 3), 64), ((1, 1), 1)] * 2
        norms = [m for m in branch.conv.modules() if isinstance(m, nn.GroupNorm)]
        assert len(norms) == 4 and {n.num_groups for n in norms} == {32}
    assert float(head.regression_head.bbox_reg.bias.detach()[0]) == 1.0  # as the default's


@pytest.mark.parametrize("name", ["depthwise_fpn64_p3p5", "levels_16_32"])
def test_a_candidates_checkpoint_restores_the_same_structure(name, tmp_path):
    config = {**BASE, **CANDIDATES[name]}
    model = _spread_scores(_build(**CANDIDATES[name])).eval()
    path = tmp_path / "best.pt"
    postprocess = {"score_threshold": 0.0, "nms_iou": 0.5, "max_detections": 20}
    state = {"schema": SCHEMA, "model": config, "class_names": ["a", "b"]}
    torch.save({**state, "postprocess": postprocess, "model_state": model.state_dict()}, path)
    rebuilt, _ = load_checkpoint(path)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    with torch.no_grad():
        for a, b in zip(rebuilt(_images()), model(_images()), strict=True):
            assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    # fine-tuning from it: the same structure, or an error naming the key
    assert build_model(**{**config, "weights": str(path)}, num_classes=2) is not None
    key, value = next(iter(CANDIDATES[name].items()))
    default = {"head_conv": "standard", "levels": [8, 16, 32, 64]}[key]
    expected = re.escape(f"trained with model.{key}={value}; set the same")
    with pytest.raises(ConfigError, match=expected):
        build_model(**{**config, key: default, "weights": str(path)}, num_classes=2)


@pytest.mark.parametrize(
    ("structure", "message"),
    [
        ({"head_conv": "separable"}, r"model.head_conv='separable'.*standard, depthwise"),
        ({"fpn_channels": 8}, r"model.fpn_channels=8 must be an integer >= 16"),
        ({"fpn_channels": 64.0}, r"model.fpn_channels=64.0 must be an integer >= 16"),
        ({"fpn_channels": True}, r"model.fpn_channels=True must be an integer >= 16"),
        ({"levels": [8, 32]}, r"model.levels=\[8, 32\].*\[8, 16, 32\] \| \[16, 32, 64\]"),
        ({"levels": [64]}, r"model.levels=\[64\] is not allowed.*64 is pooled from 32"),
        ({"levels": [16, 8]}, r"model.levels=\[16, 8\] is not allowed; use one of: \[8\]"),
        ({"levels": "8-32"}, r"model.levels='8-32' is not allowed"),
    ],
)
def test_a_wrong_structure_value_names_the_key_and_the_allowed_values(structure, message):
    with pytest.raises(ConfigError, match=message):
        build_model(**{**BASE, **structure}, num_classes=2)


def test_the_structure_keys_are_fcos_only():
    with pytest.raises(ConfigError, match="model.head_conv: only fcos_mobilenet_v2 takes"):
        build_model(name="fasterrcnn_mobilenet_v2", num_classes=2, head_conv="depthwise")
    model = build_model(name="fasterrcnn_mobilenet_v2", num_classes=2, head_conv=None)
    assert model is not None  # None: not set (a checkpoint from before issue 38)
