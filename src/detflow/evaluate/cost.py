"""What a model costs: parameter count and FLOPs of one image at the configured input size.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (torch's own counter: matrix
multiplies and convolutions, 2 FLOPs per multiply-add; element-wise ops, NMS and RoI
pooling are not counted) over one inference forward pass (eval mode, no gradients) of an
image the model resizes to its configured size (``model.min_size``/``max_size``). Two-stage
detectors' second stage scales with the proposals kept, so the figure is for the image given.
"""

from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import FlopCounterMode


def parameter_count(model: torch.nn.Module) -> int:
    """All parameters of ``model``, trainable or frozen."""
    return int(sum(p.numel() for p in model.parameters()))


@torch.inference_mode()
def flops_per_image(model: torch.nn.Module, image: torch.Tensor) -> int:
    """FLOPs of one eval-mode forward pass of ``image`` (``[3, H, W]`` float in [0, 1]);
    the model's state is left unchanged (it is put back in the mode it was in)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model([image])
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def model_cost(model: torch.nn.Module, image: torch.Tensor) -> dict:
    """``{"params", "gflops_per_image", "input_size": [H, W]}``: the input size is the one
    the model's transform resizes ``image`` to (``[3, H, W]``)."""
    size = list(image.shape[-2:])
    transform = getattr(model, "transform", None)
    if transform is not None:
        with torch.inference_mode():
            size = list(transform([image])[0].tensors.shape[-2:])
    return {
        "params": parameter_count(model),
        "gflops_per_image": round(flops_per_image(model, image) / 1e9, 3),
        "input_size": [int(v) for v in size],
    }


@torch.inference_mode()
def flops_by_part(model: torch.nn.Module, image: torch.Tensor) -> dict:
    """GFLOPs of one eval-mode forward pass of ``image`` (``[3, H, W]`` in 0..1) per part of
    the model: its modules two levels down (``backbone``, ``backbone.body`` (the trunk),
    ``backbone.fpn``, ``head``, ``rpn``, ``roi_heads`` …, as the model names them), and, for a
    head shared over the pyramid levels (FCOS, RetinaNet), its share per level
    (``head_by_level``: the head computes the same per location, so each level's share is its
    feature map's area). Where the compute goes (issue 38)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model([image])
        levels = _level_areas(model, image)
    finally:
        model.train(was_training)
    root = type(model).__name__
    parts = {
        name[len(root) + 1 :]: round(sum(ops.values()) / 1e9, 3)
        for name, ops in counter.get_flop_counts().items()
        if name.startswith(root + ".") and name.count(".") <= 2
    }
    out = {"total": round(counter.get_total_flops() / 1e9, 3), "parts": parts}
    if levels and "head" in parts:
        total = sum(levels.values())
        out["head_by_level"] = {k: round(parts["head"] * v / total, 3) for k, v in levels.items()}
    return out


def _level_areas(model: torch.nn.Module, image: torch.Tensor) -> dict[str, int]:
    """``{"stride S": H×W}`` of the feature maps a multi-level detector's head runs on."""
    transform, backbone = getattr(model, "transform", None), getattr(model, "backbone", None)
    if transform is None or backbone is None or not hasattr(model, "head"):
        return {}
    batch = transform([image])[0].tensors
    features = backbone(batch)
    maps = list(features.values()) if isinstance(features, dict) else [features]
    strides = [2 ** round(math.log2(batch.shape[-1] / m.shape[-1])) for m in maps]
    return {
        f"stride {s}": int(m.shape[-2] * m.shape[-1]) for s, m in zip(strides, maps, strict=True)
    }
