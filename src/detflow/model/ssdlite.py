"""SSDlite on the offline ImageNet MobileNetV2: the single-stage detector of the MobileNetV2
paper (section 6.2), built for CPUs: no region proposals, no RoIAlign, depthwise convs only.

Images are resized to one square (``min_size`` = ``max_size``). Feature maps: the expansion
layer of the first stride-32 block (576 channels, stride 16, as the paper attaches it), the
trunk's last conv (1280, stride 32) and three extra blocks (512, 256, 256; strides 64-256):
five maps, so at a 416 px input the smallest is 2 × 2 and a training batch of one image still
has several values per channel for the extra blocks' batch norm (torchvision's SSDlite adds a
fourth, 1 × 1 at 320 px, which fails on a batch of one). Default boxes: 2 + 2 × (h/w 2 and 3)
per location, scales 0.1-0.95 of the input side (torchvision: 0.2-0.95 from a stride-16 map of
a 320 px input; 0.1 here keeps 40 px boxes matched at 416 px).
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import (
    SSDLiteFeatureExtractorMobileNet,
    SSDLiteHead,
    _extra_block,
    _normal_init,
)

from detflow.model.mobilenet import freeze_and_fold

EXPANSION_BLOCK = 14  # MobileNetV2's first stride-32 block; its 1×1 expansion is at stride 16
EXTRA_CHANNELS = (512, 256, 256)
OUT_CHANNELS = [576, 1280, *EXTRA_CHANNELS]
MIN_SCALE, MAX_SCALE = 0.1, 0.95  # default box side / input side, first and last map


class SSDLiteFeatures(SSDLiteFeatureExtractorMobileNet):
    """MobileNetV2 split at block 14's expansion layer, plus the extra blocks. Input
    ``[B, 3, S, S]``; output: five maps ``[B, C_i, S_i, S_i]`` (C: :data:`OUT_CHANNELS`).
    torchvision's extractor, whose ``forward`` this keeps; only the split differs (its
    ``__init__`` reads MobileNetV3's ``block``, MobileNetV2's blocks hold ``conv``)."""

    def __init__(self, features: nn.Sequential, norm_layer) -> None:
        nn.Module.__init__(self)
        split = features[EXPANSION_BLOCK]
        if split.use_res_connect:
            raise ValueError(f"MobileNetV2 block {EXPANSION_BLOCK} must not be residual")
        self.features = nn.Sequential(
            nn.Sequential(*features[:EXPANSION_BLOCK], split.conv[0]),
            nn.Sequential(split.conv[1:], *features[EXPANSION_BLOCK + 1 :]),
        )
        widths = [OUT_CHANNELS[1], *EXTRA_CHANNELS]
        self.extra = nn.ModuleList(
            _extra_block(a, b, norm_layer) for a, b in zip(widths, widths[1:], strict=False)
        )
        _normal_init(self.extra)


def ssdlite_mobilenet_v2(
    *,
    features: nn.Sequential,
    num_classes: int,
    trainable_layers: int,
    min_size: int,
    max_size: int,
) -> SSD:
    """SSDlite (see the module doc) on ``features`` (MobileNetV2's, frozen batch norm) for a
    ``min_size`` square input (``max_size`` must equal it; checked by the builder)."""
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)  # torchvision's SSDlite
    anchors = DefaultBoxGenerator(
        [[2, 3]] * len(OUT_CHANNELS), min_ratio=MIN_SCALE, max_ratio=MAX_SCALE
    )
    model = SSD(
        SSDLiteFeatures(features, norm_layer),
        anchors,
        (min_size, max_size),
        num_classes,
        head=SSDLiteHead(OUT_CHANNELS, anchors.num_anchors_per_location(), num_classes, norm_layer),
        topk_candidates=300,
    )
    return freeze_and_fold(model, trainable_layers)
