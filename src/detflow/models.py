"""Detector builders. Every model takes images as a list of ``[3, H, W]`` float tensors in
0..1 and returns, per image, ``boxes`` (``[N, 4]`` ``xyxy`` pixels of the input image),
``labels`` (``[N]`` int64 category ids 1..C; 0 is background) and ``scores`` (``[N]``).

``fasterrcnn_mobilenet_v2`` is the CPU default: Faster R-CNN on torchvision's ImageNet
MobileNetV2, whose weights file is available offline. Every other name is a torchvision
detection builder (``torchvision.models.get_model``).
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models import MobileNet_V2_Weights
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import mobilenet_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from detflow.errors import ConfigError, require_choice, require_positive

CUSTOM_MODELS = ("fasterrcnn_mobilenet_v2",)


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(
        set(CUSTOM_MODELS)
        | set(torchvision.models.list_models(module=torchvision.models.detection))
    )


def build_model(
    *,
    name: str,
    num_classes: int,
    weights: str = "none",
    backbone_weights: str = "none",
    trainable_backbone_layers: int = 3,
    min_size: int = 416,
    max_size: int = 416,
    test_proposals: int = 1000,
    score_threshold: float = 0.05,
    nms_iou: float = 0.5,
    max_detections: int = 100,
) -> nn.Module:
    """Build a detector for ``num_classes`` object classes (background is added here).

    ``weights``/``backbone_weights``: ``"none"`` or a torchvision weights name; weights that
    are not cached are downloaded, and where that fails the error names the file to place.
    ``trainable_backbone_layers``: how many backbone stages train (torchvision's meaning);
    ``test_proposals``: region proposals kept per image at inference (two-stage models).
    """
    require_choice("model.name", name, available_models())
    require_positive("num_classes", num_classes)
    require_positive("model.min_size", min_size)
    require_positive("model.max_size", max_size)
    if weights not in (None, "none"):
        raise ConfigError(
            f"model.weights={weights!r}: whole-detector weights are not supported "
            "yet; use model.weights=none and model.backbone_weights"
        )
    if name == "fasterrcnn_mobilenet_v2":
        model = _fasterrcnn_mobilenet_v2(
            num_classes + 1,
            backbone_weights,
            trainable_backbone_layers,
            min_size,
            max_size,
            test_proposals,
        )
    else:
        extra = {"rpn_post_nms_top_n_test": test_proposals} if "rcnn" in name else {}
        model = _load(
            lambda: torchvision.models.get_model(
                name,
                weights=None,
                weights_backbone=_none(backbone_weights),
                num_classes=num_classes + 1,
                min_size=min_size,
                max_size=max_size,
                trainable_backbone_layers=trainable_backbone_layers,
                **extra,
            ),
            key="model.backbone_weights",
            value=backbone_weights,
        )
    set_postprocess(
        model, score_threshold=score_threshold, nms_iou=nms_iou, max_detections=max_detections
    )
    return model


def set_postprocess(
    model: nn.Module, *, score_threshold: float, nms_iou: float, max_detections: int
) -> None:
    """Apply the shared ``postprocess.*`` config to a torchvision detector in place."""
    target = getattr(model, "roi_heads", model)
    if not hasattr(target, "score_thresh"):
        raise ConfigError(f"{type(model).__name__} has no score/NMS settings to configure")
    target.score_thresh = float(score_threshold)
    target.nms_thresh = float(nms_iou)
    target.detections_per_img = int(max_detections)


def _fasterrcnn_mobilenet_v2(
    num_classes, backbone_weights, trainable_layers, min_size, max_size, proposals
):
    """torchvision's MobileNetV2 extractor (frozen batch norm, the last ``trainable_layers`` of
    its 6 stages trainable, a 1×1 conv to 256 channels) under a light two-layer box head."""
    weights = _none(backbone_weights)
    backbone = _load(
        lambda: mobilenet_backbone(
            backbone_name="mobilenet_v2",
            fpn=False,
            trainable_layers=trainable_layers,
            weights=MobileNet_V2_Weights[weights] if weights else None,
        ),
        key="model.backbone_weights",
        value=backbone_weights,
        weights_enum=MobileNet_V2_Weights,
    )
    fold_frozen_batchnorm(backbone)
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    return FasterRCNN(
        backbone,
        num_classes=None,
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        rpn_post_nms_top_n_test=proposals,
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(256 * 7 * 7, 512),
        box_predictor=FastRCNNPredictor(512, num_classes),
        box_batch_size_per_image=64,
    )


def fold_frozen_batchnorm(module: nn.Module) -> int:
    """Fold each frozen ``FrozenBatchNorm2d`` into the frozen conv before it (exact: the layer
    computes the same function, in one pass instead of three). Returns the number folded."""
    folded = 0
    for child in module.modules():
        if not isinstance(child, nn.Sequential):
            continue
        layers = list(child)
        for i in range(len(layers) - 1):
            conv, norm = layers[i], layers[i + 1]
            frozen = not any(p.requires_grad for p in conv.parameters())
            if isinstance(conv, nn.Conv2d) and isinstance(norm, FrozenBatchNorm2d) and frozen:
                weight, bias = fuse_conv_bn_weights(
                    conv.weight,
                    conv.bias,
                    norm.running_mean,
                    norm.running_var,
                    norm.eps,
                    norm.weight,
                    norm.bias,
                )
                conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
                conv.bias = nn.Parameter(bias.detach(), requires_grad=False)
                child[i + 1] = nn.Identity()
                folded += 1
    return folded


def _none(value):
    return None if value in (None, "none", "None") else value


def _load(build, *, key: str, value, weights_enum=None):
    """Run ``build``; turn a failed weights download into a ConfigError naming the file."""
    try:
        return build()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        try:
            file_name = Path(weights_enum[value].url).name
        except (KeyError, TypeError):
            file_name = "torchvision's weights file for it"
        raise ConfigError(
            f"{key}={value!r}: weights could not be downloaded ({exc}); place {file_name} in "
            f"{cache} (`make weights` does this for MobileNetV2) or set {key}=none"
        ) from exc
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{key}={value!r} is not a torchvision weights name ({exc})") from exc
