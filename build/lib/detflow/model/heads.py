"""Replace a detector's classification layer for another class count (fine-tuning).

Pretrained detectors (COCO: 91 classes) and detflow checkpoints of another dataset are loaded
whole, then :func:`replace_class_head` swaps only the layers whose size depends on the class
count for freshly initialised ones, as torchvision's fine-tuning tutorial does.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.ssd import SSD

from detflow.core.errors import ConfigError


def class_count(model: nn.Module) -> int:
    """Classes (background included) that ``model``'s classifier scores."""
    if isinstance(model, FasterRCNN):
        return model.roi_heads.box_predictor.cls_score.out_features
    if isinstance(model, (RetinaNet, FCOS)):
        return model.head.classification_head.num_classes
    if isinstance(model, SSD):
        return model.head.classification_head.num_columns
    raise ConfigError(f"{type(model).__name__}: no known class head")


def replace_class_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Give ``model`` a new classifier for ``num_classes`` (background included); in place."""
    if isinstance(model, FasterRCNN):
        old = model.roi_heads.box_predictor
        model.roi_heads.box_predictor = FastRCNNPredictor(old.cls_score.in_features, num_classes)
    elif isinstance(model, (RetinaNet, FCOS)):
        head = model.head.classification_head
        anchors = head.cls_logits.out_channels // head.num_classes
        head.cls_logits = _focal_logits(head.cls_logits, anchors * num_classes)
        head.num_classes = num_classes
    elif isinstance(model, SSD):
        head = model.head.classification_head
        for index, block in enumerate(head.module_list):
            conv = block[-1] if isinstance(block, nn.Sequential) else block
            anchors = conv.out_channels // head.num_columns
            new = _like(conv, anchors * num_classes)
            nn.init.xavier_uniform_(new.weight)
            nn.init.zeros_(new.bias)
            if isinstance(block, nn.Sequential):
                block[-1] = new
            else:
                head.module_list[index] = new
        head.num_columns = num_classes
    else:
        raise ConfigError(f"{type(model).__name__}: no known class head to replace")
    return model


def _like(conv: nn.Conv2d, out_channels: int) -> nn.Conv2d:
    """A new conv with ``conv``'s shape except its output channels."""
    return nn.Conv2d(
        conv.in_channels,
        out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    ).to(conv.weight.device)


def _focal_logits(conv: nn.Conv2d, out_channels: int, prior: float = 0.01) -> nn.Conv2d:
    """RetinaNet/FCOS classifier init: small weights, bias for a ``prior`` foreground score."""
    new = _like(conv, out_channels)
    nn.init.normal_(new.weight, std=0.01)
    with torch.no_grad():
        new.bias.fill_(-math.log((1 - prior) / prior))
    return new
