import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from detflow.core.errors import ConfigError
from detflow.model.backbone import stages, trunk
from detflow.model.build import build_model
from detflow.model.ssdlite import OUT_CHANNELS


def _ssdlite(size: int = 288, trainable: int = 3):
    torch.manual_seed(0)
    return build_model(name="ssdlite_mobilenet_v2", num_classes=2, min_size=size,
                       max_size=size, trainable_backbone_layers=trainable)  # fmt: skip


def test_five_maps_from_stride_16_with_the_documented_channels():
    model = _ssdlite().eval()
    maps = model.backbone(torch.rand(1, 3, 288, 288))
    assert [m.shape[1] for m in maps.values()] == OUT_CHANNELS
    assert [m.shape[-1] for m in maps.values()] == [18, 9, 5, 3, 2]  # strides 16..256
    assert len(model.anchor_generator.aspect_ratios) == len(OUT_CHANNELS)
    assert len(stages(model)) == 6  # MobileNetV2's six, as for the other two builders


def test_a_training_batch_of_one_image_works():
    """Five maps, not torchvision's six: the smallest is 2 × 2 at 288 px, so the extra
    blocks' batch norm sees several values per channel even for a last batch of one."""
    model = _ssdlite().train()
    target = {"boxes": torch.tensor([[10.0, 20.0, 200.0, 250.0]]), "labels": torch.tensor([1])}
    losses = model([torch.rand(3, 300, 400)], [target])
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_frozen_stages_are_folded_and_trainable_ones_keep_their_norm():
    model = _ssdlite(trainable=3)
    frozen, trainable = stages(model)[:3], stages(model)[3:]
    assert not any(p.requires_grad for group in frozen for m in group for p in m.parameters())
    assert not any(
        isinstance(x, FrozenBatchNorm2d) for group in frozen for m in group for x in m.modules()
    )
    assert any(isinstance(x, FrozenBatchNorm2d) for m in trainable[0] for x in m.modules())
    assert all(p.requires_grad for m in trainable[-1] for p in m.parameters())
    assert trunk(model) is model.backbone.features


def test_the_input_is_one_square():
    assert _ssdlite(320).transform.fixed_size == (320, 320)
    with pytest.raises(ConfigError, match="must be equal"):
        build_model(name="ssdlite_mobilenet_v2", num_classes=2, min_size=320, max_size=416)
