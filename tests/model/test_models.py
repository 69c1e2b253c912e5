import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detflow.core.errors import ConfigError
from detflow.model.backbone import stages, trunk
from detflow.model.build import available_models, build_model
from detflow.model.checkpoint_file import SCHEMA
from detflow.model.heads import class_count, replace_class_head
from detflow.model.mobilenet import fold_frozen_batchnorm
from detflow.model.restore import load_checkpoint


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


def _offline(monkeypatch, tmp_path):
    import urllib.error

    import torchvision.models._api as weights_api

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(weights_api, "load_state_dict_from_url", offline)


def test_detector_weights_offline_name_the_exact_file(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    with pytest.raises(
        ConfigError,
        match=r"model.weights='COCO_V1'.*fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9"
        r"\.pth in .*hub/checkpoints",
    ):
        build_model(name=name, num_classes=2, weights="COCO_V1")
    with pytest.raises(ConfigError, match=r"model.backbone_weights='IMAGENET1K_V1'.*mobilenet_v3"):
        build_model(name=name, num_classes=2, backbone_weights="IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="model.weights='VOC'.*none, COCO_V1, DEFAULT"):
        build_model(name=name, num_classes=2, weights="VOC")
    with pytest.raises(ConfigError, match="fasterrcnn_mobilenet_v2; use none, or a detflow"):
        build_model(name="fasterrcnn_mobilenet_v2", num_classes=2, weights="COCO_V1")


def test_coco_weights_load_whole_then_get_our_class_head(monkeypatch, tmp_path):
    """The COCO file is simulated (offline): a 91-class model's state dict."""
    import torchvision
    from torchvision.models import WeightsEnum

    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    torch.manual_seed(0)
    coco = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=91)
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, **kw: coco.state_dict())
    config = {"name": name, "weights": "COCO_V1", "min_size": 64, "max_size": 64}
    model = build_model(**config, num_classes=2)
    assert class_count(model) == 3 and class_count(coco) == 91
    rpn = "rpn.head.conv.0.0.weight"
    assert torch.equal(model.state_dict()[rpn], coco.state_dict()[rpn])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in trunk(model).modules())  # frozen
    # a checkpoint of it rebuilds offline with the same structure
    path = tmp_path / "best.pt"
    torch.save(
        {
            "schema": SCHEMA,
            "model": config,
            "class_names": ["a", "b"],
            "postprocess": {"score_threshold": 0.0, "nms_iou": 0.5, "max_detections": 10},
            "model_state": model.state_dict(),
        },
        path,
    )
    monkeypatch.undo()
    rebuilt, _ = load_checkpoint(path)
    images = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        model.eval()
        model.roi_heads.score_thresh, model.roi_heads.detections_per_img = 0.0, 10
        assert torch.equal(rebuilt(images)[0]["boxes"], model(images)[0]["boxes"])


def test_a_detflow_checkpoint_starts_a_model_with_other_classes(tmp_path):
    config = {"name": "fcos_mobilenet_v2", "backbone_weights": "none", "min_size": 64,
              "max_size": 64, "trainable_backbone_layers": 3}  # fmt: skip
    torch.manual_seed(0)
    source = build_model(**config, num_classes=5)
    path = tmp_path / "other.pt"
    state = {"schema": SCHEMA, "model": config, "class_names": list("abcde")}
    torch.save({**state, "model_state": source.state_dict()}, path)
    model = build_model(**{**config, "weights": str(path)}, num_classes=2)
    assert class_count(model) == 3
    ours, theirs = model.state_dict(), source.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs if "cls_logits" not in k)
    with pytest.raises(ConfigError, match="a fcos_mobilenet_v2 checkpoint; set model="):
        build_model(name="fasterrcnn_mobilenet_v2", weights=str(path), num_classes=2)
    with pytest.raises(ConfigError, match="trainable_backbone_layers=3; set the same"):
        build_model(**{**config, "weights": str(path), "trainable_backbone_layers": 2},
                    num_classes=2)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "sizes"),
    [
        ("fcos_mobilenet_v2", {}),
        ("ssdlite320_mobilenet_v3_large", {"min_size": 96, "max_size": 96}),
    ],
)
def test_replaced_class_heads_train_and_predict(name, sizes):
    config = {"min_size": 64, "max_size": 64, **sizes}
    model = replace_class_head(build_model(name=name, num_classes=7, **config), 4)
    assert class_count(model) == 4
    target = {"boxes": torch.tensor([[4.0, 4.0, 40.0, 30.0]]), "labels": torch.tensor([3])}
    losses = model.train()([torch.rand(3, 64, 64)] * 2, [target] * 2)
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        out = model.eval()([torch.rand(3, 64, 64)])[0]
    assert out["labels"].numel() == 0 or int(out["labels"].max()) <= 3


def test_ssd_sizes_are_square_and_ssd300_is_fixed():
    model = build_model(name="ssdlite320_mobilenet_v3_large", num_classes=2, min_size=256,
                        max_size=256)  # fmt: skip
    assert model.transform.fixed_size == (256, 256)
    with pytest.raises(ConfigError, match="must be both 300 for ssd300_vgg16"):
        build_model(name="ssd300_vgg16", num_classes=2, min_size=320, max_size=320)
    with pytest.raises(ConfigError, match="must be equal"):
        build_model(name="ssdlite320_mobilenet_v3_large", num_classes=2, min_size=320,
                    max_size=400)  # fmt: skip


def test_backbone_stage_counts_follow_torchvision():
    counts = {
        name: len(stages(build_model(name=name, num_classes=2, **sizes)))
        for name, sizes in (
            ("fasterrcnn_mobilenet_v2", {}),
            ("fasterrcnn_mobilenet_v3_large_320_fpn", {}),
            ("ssdlite320_mobilenet_v3_large", {"min_size": 320, "max_size": 320}),
        )
    }
    assert counts == {
        "fasterrcnn_mobilenet_v2": 6,
        "fasterrcnn_mobilenet_v3_large_320_fpn": 6,
        "ssdlite320_mobilenet_v3_large": 6,
    }
