import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detflow.errors import ConfigError
from detflow.models import available_models, build_model, fold_frozen_batchnorm


def _conv_bn(frozen: bool) -> nn.Sequential:
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), FrozenBatchNorm2d(8), nn.ReLU())
    norm = block[1]
    norm.weight.copy_(torch.rand(8) + 0.5)
    norm.bias.copy_(torch.randn(8))
    norm.running_mean.copy_(torch.randn(8))
    norm.running_var.copy_(torch.rand(8) + 0.1)
    block.requires_grad_(not frozen)
    return block


def test_fold_frozen_batchnorm_is_exact_and_skips_trainable_convs():
    frozen, x = _conv_bn(frozen=True), torch.randn(2, 3, 16, 16)
    expected = frozen(x)
    assert fold_frozen_batchnorm(frozen) == 1
    assert isinstance(frozen[1], nn.Identity)
    assert torch.allclose(frozen(x), expected, atol=1e-5)
    trainable = _conv_bn(frozen=False)
    assert fold_frozen_batchnorm(trainable) == 0


def test_default_model_output_contract():
    model = build_model(
        name="fasterrcnn_mobilenet_v2",
        num_classes=3,
        backbone_weights="none",
        min_size=64,
        max_size=64,
        score_threshold=0.0,
    ).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 48, 80)])[0]
    assert out["boxes"].shape[1] == 4 and out["boxes"].dtype == torch.float32
    assert out["labels"].dtype == torch.int64
    assert int(out["labels"].min()) >= 1 and int(out["labels"].max()) <= 3
    assert float(out["boxes"][:, 2].max()) <= 80 and float(out["boxes"][:, 3].max()) <= 48


def test_unknown_model_and_weights_are_clear_errors():
    with pytest.raises(ConfigError, match="model.name='yolo9000'.*fasterrcnn_mobilenet_v2"):
        build_model(name="yolo9000", num_classes=2)
    with pytest.raises(ConfigError, match="model.backbone_weights='IMAGENET_BOGUS'"):
        build_model(
            name="fasterrcnn_mobilenet_v2", num_classes=2, backbone_weights="IMAGENET_BOGUS"
        )
    assert "fasterrcnn_mobilenet_v3_large_320_fpn" in available_models()


def test_weights_that_cannot_be_downloaded_name_the_file_to_place(monkeypatch, tmp_path):
    import urllib.error

    import torchvision.models._api as weights_api

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(weights_api, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match=r"mobilenet_v2-b0353104\.pth.*checkpoints"):
        build_model(name="fasterrcnn_mobilenet_v2", num_classes=2, backbone_weights="IMAGENET1K_V1")
