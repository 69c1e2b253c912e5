"""Detectors on torchvision's ImageNet MobileNetV2, whose weights file is available offline
(``make weights``): FCOS (what the default ``auto`` picks on most data) and Faster R-CNN.
SSDlite on the same trunk is in :mod:`detflow.model.ssdlite`.

The trunk uses frozen batch norm; each frozen conv + frozen batch norm pair is folded into one
conv (exact, and faster), so a model's structure depends on ``trainable_backbone_layers``,
which checkpoints record. FCOS's structure also depends on ``head_conv``, ``fpn_channels``
and ``levels`` (lighter candidates, issue 38; :func:`fcos_structure`), recorded the same way.
"""

from __future__ import annotations

import math
from functools import partial

import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models import MobileNet_V2_Weights
from torchvision.models.detection import FCOS, FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import Conv2dNormActivation

from detflow.core.errors import ConfigError, require_choice
from detflow.model.backbone import set_trainable_stages

# MobileNetV2 blocks ending the stride-8, stride-16 and stride-32 stages, and their widths.
TRUNK_LEVELS = {8: ("6", 32), 16: ("13", 96), 32: ("18", 1280)}  # stride: (block, width)
POOLED_LEVEL = 64  # max-pooled from the stride-32 map
# FCOS's pyramid: its levels are a consecutive run of these strides with a trunk level in it
ALLOWED_LEVELS = ((8,), (16,), (32,), (8, 16), (16, 32), (32, 64), (8, 16, 32), (16, 32, 64),
                  (8, 16, 32, 64))  # fmt: skip
HEAD_CONVS = 2  # convs per head branch
HEAD_CONV_KINDS = ("standard", "depthwise")
TORCHVISION_GROUPS = 32  # FCOSHead's GroupNorm groups
FCOS_DEFAULTS = {"head_conv": "standard", "fpn_channels": 128, "levels": (8, 16, 32, 64)}
# fasterrcnn_mobilenet_v2's defaults: anchors on its one stride-32 map, RoIs per image
ANCHOR_SIZES = (32, 64, 128, 256, 512)  # sqrt(w·h), input pixels
ANCHOR_ASPECT_RATIOS = (0.5, 1.0, 2.0)  # h / w
ROIS_PER_IMAGE = 64  # torchvision samples 512: slow on a CPU


def mobilenet_v2_features(weights: str | None) -> nn.Sequential:
    """MobileNetV2's feature extractor with frozen batch norm (``weights``: an enum name)."""
    return torchvision.models.mobilenet_v2(
        weights=MobileNet_V2_Weights[weights] if weights else None, norm_layer=FrozenBatchNorm2d
    ).features


def fasterrcnn_mobilenet_v2(
    *,
    features: nn.Sequential,
    num_classes: int,
    trainable_layers: int,
    proposals: int,
    anchor_sizes=ANCHOR_SIZES,
    anchor_aspect_ratios=ANCHOR_ASPECT_RATIOS,
    rois_per_image: int = ROIS_PER_IMAGE,
    **sizes,
) -> FasterRCNN:
    """The trunk, a 1×1 conv to 256 channels (one feature map, stride 32), anchors of
    ``anchor_sizes`` × ``anchor_aspect_ratios`` on it, and a light two-layer box head sampling
    ``rois_per_image`` RoIs per image."""
    backbone = nn.Sequential(features, nn.Conv2d(features[-1].out_channels, 256, 1))
    backbone.out_channels = 256
    model = FasterRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=AnchorGenerator(
            sizes=(tuple(anchor_sizes),), aspect_ratios=(tuple(anchor_aspect_ratios),)
        ),
        rpn_post_nms_top_n_test=proposals,
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(256 * 7 * 7, 512),
        box_predictor=FastRCNNPredictor(512, num_classes),
        box_batch_size_per_image=int(rois_per_image),
        **sizes,
    )
    return freeze_and_fold(model, trainable_layers)


def fcos_mobilenet_v2(
    *,
    features: nn.Sequential,
    num_classes: int,
    trainable_layers: int,
    head_conv: str | None = None,
    fpn_channels: int | None = None,
    levels=None,
    **sizes,
) -> FCOS:
    """Anchor-free FCOS: an FPN of ``fpn_channels`` (default 128) over the pyramid ``levels``
    (strides; default 8, 16, 32 from the trunk and a pooled 64), and a head of two convs per
    branch (torchvision's has four of 256 channels: too slow for a CPU), ``standard`` 3×3 or
    ``depthwise``-separable (``head_conv``). The defaults (None) build the same model, weights
    drawn in the same order, as before these keys existed. Checked by :func:`fcos_structure`."""
    structure = fcos_structure(head_conv=head_conv, fpn_channels=fpn_channels, levels=levels)
    levels, channels = structure["levels"], structure["fpn_channels"]
    model = FCOS(
        fcos_backbone(features, levels=levels, channels=channels),
        num_classes,
        anchor_generator=AnchorGenerator(
            sizes=tuple((stride,) for stride in levels), aspect_ratios=((1.0,),) * len(levels)
        ),
        head=fcos_head(
            channels=channels, num_classes=num_classes, head_conv=structure["head_conv"]
        ),
        **sizes,
    )
    return freeze_and_fold(model, trainable_layers)


def fcos_structure(*, head_conv=None, fpn_channels=None, levels=None) -> dict:
    """``model.head_conv``, ``model.fpn_channels`` and ``model.levels`` of
    ``fcos_mobilenet_v2`` checked, None taking :data:`FCOS_DEFAULTS`; returns them as
    ``{"head_conv": str, "fpn_channels": int, "levels": (stride, …)}`` (levels ascending).
    Raises ConfigError naming the key and its allowed values."""
    head_conv = FCOS_DEFAULTS["head_conv"] if head_conv is None else head_conv
    require_choice("model.head_conv", head_conv, HEAD_CONV_KINDS)
    fpn_channels = FCOS_DEFAULTS["fpn_channels"] if fpn_channels is None else fpn_channels
    if isinstance(fpn_channels, bool) or not isinstance(fpn_channels, int) or fpn_channels < 16:
        raise ConfigError(
            f"model.fpn_channels={fpn_channels!r} must be an integer >= 16 (default 128)"
        )
    levels = FCOS_DEFAULTS["levels"] if levels is None else levels
    given = tuple(levels) if isinstance(levels, list | tuple) else levels
    if given not in ALLOWED_LEVELS:
        allowed = " | ".join(str(list(run)) for run in ALLOWED_LEVELS)
        raise ConfigError(
            f"model.levels={levels!r} is not allowed; use one of: {allowed} (strides in "
            "input px, ascending and consecutive; 64 is pooled from 32)"
        )
    return {"head_conv": head_conv, "fpn_channels": fpn_channels, "levels": given}


def fcos_backbone(features: nn.Sequential, *, levels, channels: int) -> BackboneWithFPN:
    """The trunk (cut after its last block used) and an FPN of ``channels`` over ``levels``:
    the trunk's stride-8/16/32 outputs (:data:`TRUNK_LEVELS`) each named, and a stride-64
    map max-pooled from the stride-32 one (torchvision's ``LastLevelMaxPool``) only when 64
    is a level. Input ``[N, 3, H, W]``; output an ordered dict of ``[N, channels, H/s, W/s]``,
    one per level, finest first."""
    from_trunk = [stride for stride in levels if stride in TRUNK_LEVELS]
    backbone = BackboneWithFPN(
        features,
        {TRUNK_LEVELS[stride][0]: str(i) for i, stride in enumerate(from_trunk)},
        [TRUNK_LEVELS[stride][1] for stride in from_trunk],
        channels,
        extra_blocks=LastLevelMaxPool(),  # None would get one too; dropped below
    )
    if POOLED_LEVEL not in levels:
        backbone.fpn.extra_blocks = None  # the FPN skips it (no parameters: nothing drawn)
    return backbone


# torchvision starts FCOS's box regression at bias 0, where its ReLU'd outputs sit on the
# boundary: an early large step can push them all below it, every predicted box is then empty
# and the GIoU loss stays at 1.0 for good (1 of 3 seeds of the generated dense set, at
# train.lr 0.02 and 0.01; a known FCOS failure). Bias 1: each location starts predicting a box
# one stride out from it on every side, inside the ReLU's live range.
FCOS_REGRESSION_BIAS = 1.0


def fcos_head(*, channels: int, num_classes: int, head_conv: str) -> FCOSHead:
    """The FCOS head on ``[N, channels, H, W]`` maps: per branch (classification; box
    regression and centerness) a tower of :data:`HEAD_CONVS` convs (:func:`head_tower`).
    Where torchvision's own tower fits (standard convs, a width divisible by its 32 groups)
    it is torchvision's ``FCOSHead`` as it draws its weights; otherwise that head with the
    towers replaced."""
    groups = math.gcd(TORCHVISION_GROUPS, channels)
    if head_conv == "standard" and groups == TORCHVISION_GROUPS:
        head = FCOSHead(channels, 1, num_classes, num_convs=HEAD_CONVS)
    else:
        head = FCOSHead(channels, 1, num_classes, num_convs=0)  # the predictors only
        for branch in (head.classification_head, head.regression_head):
            branch.conv = head_tower(channels, depthwise=head_conv == "depthwise", groups=groups)
    nn.init.constant_(head.regression_head.bbox_reg.bias, FCOS_REGRESSION_BIAS)
    return head


def head_tower(channels: int, *, depthwise: bool, groups: int) -> nn.Sequential:
    """:data:`HEAD_CONVS` blocks ``[N, C, H, W]`` → ``[N, C, H, W]`` (C = ``channels``),
    each conv followed by ``GroupNorm(groups)`` and ReLU: a 3×3 conv, or (``depthwise``, as
    NanoDet and PicoDet) a 3×3 depthwise conv (``groups=C``) then a 1×1 conv, (C+9)/(9C) of
    its multiply-adds (1/8 at 128). Conv weights drawn as torchvision's FCOS head draws its
    own (normal, std 0.01)."""
    norm = partial(nn.GroupNorm, groups)
    blocks = []
    for _ in range(HEAD_CONVS):
        if depthwise:
            blocks.append(Conv2dNormActivation(channels, channels, 3, groups=channels,
                                               norm_layer=norm))  # fmt: skip
            blocks.append(Conv2dNormActivation(channels, channels, 1, norm_layer=norm))
        else:
            blocks.append(Conv2dNormActivation(channels, channels, 3, norm_layer=norm))
    tower = nn.Sequential(*blocks)
    for module in tower.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.01)
    return tower


def freeze_and_fold(model: nn.Module, trainable_layers: int) -> nn.Module:
    """Freeze all but the last ``trainable_layers`` trunk stages, then fold the frozen convs'
    batch norm (:func:`fold_frozen_batchnorm`); returns ``model``."""
    set_trainable_stages(model, trainable_layers, key="model.trainable_backbone_layers")
    fold_frozen_batchnorm(model.backbone)
    return model


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
