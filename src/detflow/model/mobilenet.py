"""Detectors on torchvision's ImageNet MobileNetV2, whose weights file is available offline
(``make weights``): FCOS (what the default ``auto`` picks on most data) and Faster R-CNN.
SSDlite on the same trunk is in :mod:`detflow.model.ssdlite`.

The trunk uses frozen batch norm; each frozen conv + frozen batch norm pair is folded into one
conv (exact, and faster), so a model's structure depends on ``trainable_backbone_layers``,
which checkpoints record.
"""

from __future__ import annotations

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

from detflow.model.backbone import set_trainable_stages

# MobileNetV2 blocks ending the stride-8, stride-16 and stride-32 stages, and their widths.
FPN_LAYERS = {"6": "0", "13": "1", "18": "2"}
FPN_IN_CHANNELS = [32, 96, 1280]
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
    *, features: nn.Sequential, num_classes: int, trainable_layers: int, **sizes
) -> FCOS:
    """Anchor-free FCOS: a 128-channel FPN over strides 8, 16, 32 (+ a pooled 64), and a head
    of two convs per branch (torchvision's has four of 256 channels: too slow for a CPU)."""
    backbone = BackboneWithFPN(
        features, FPN_LAYERS, FPN_IN_CHANNELS, 128, extra_blocks=LastLevelMaxPool()
    )
    model = FCOS(
        backbone,
        num_classes,
        anchor_generator=AnchorGenerator(
            sizes=((8,), (16,), (32,), (64,)), aspect_ratios=((1.0,),) * 4
        ),
        head=_fcos_head(num_classes),
        **sizes,
    )
    return freeze_and_fold(model, trainable_layers)


# torchvision starts FCOS's box regression at bias 0, where its ReLU'd outputs sit on the
# boundary: an early large step can push them all below it, every predicted box is then empty
# and the GIoU loss stays at 1.0 for good (1 of 3 seeds of the generated dense set, at
# train.lr 0.02 and 0.01; a known FCOS failure). Bias 1: each location starts predicting a box
# one stride out from it on every side, inside the ReLU's live range.
FCOS_REGRESSION_BIAS = 1.0


def _fcos_head(num_classes: int) -> FCOSHead:
    head = FCOSHead(128, 1, num_classes, num_convs=2)
    nn.init.constant_(head.regression_head.bbox_reg.bias, FCOS_REGRESSION_BIAS)
    return head


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
