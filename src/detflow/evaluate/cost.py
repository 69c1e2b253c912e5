"""What a model costs: parameter count and FLOPs of one image at the configured input size.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (torch's own counter: matrix
multiplies and convolutions, 2 FLOPs per multiply-add; element-wise ops, NMS and RoI
pooling are not counted) over one inference forward pass (eval mode, no gradients) of an
image the model resizes to its configured size (``model.min_size``/``max_size``). Two-stage
detectors' second stage scales with the proposals kept, so the figure is for the image given.
"""

from __future__ import annotations

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
