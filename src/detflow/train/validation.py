"""Per-epoch validation of a :class:`~detflow.train.run.TrainingRun`: val mAP (what picks
``best.pt``) and the val loss, on rank 0, shared with every rank."""

from __future__ import annotations

import torch
from torch import nn

from detflow.evaluate.inference import evaluate_model
from detflow.model.backbone import train_mode
from detflow.train import distributed
from detflow.train.run import TrainingRun


def to_device(images, targets, device):
    """Inputs on the training device. (With ``channels_last`` the weights carry the memory
    format: convolutions follow it, and the model batches the images itself.)"""
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [
        {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
    ]
    return images, targets


def validate(run: TrainingRun, val_set) -> dict:
    """Val mAP50 and mAP50-95, computed on rank 0 and shared with every rank."""
    values = torch.zeros(2, dtype=torch.float64, device=run.device)
    if run.world.is_main:
        val = evaluate_model(run.model, val_set, postprocess=run.postprocess, device=run.device)
        values = torch.tensor(
            [val["map50"], val["map50_95"]], dtype=torch.float64, device=run.device
        )
    values = distributed.broadcast(values, run.world).tolist()
    return {"val_map50": values[0], "val_map50_95": values[1]}


def val_loss(run: TrainingRun, val_set) -> float:
    """Mean total training loss per val image (rank 0, shared with every rank): a train-mode
    forward without gradients, batch-norm layers in eval (running statistics used, not
    updated) and the random state restored afterwards (the heads' box sampling draws from
    it), so the model, its modes and the rest of training are exactly as without it."""
    value = torch.zeros(1, dtype=torch.float64, device=run.device)
    if run.world.is_main and len(val_set):
        modes = {module: module.training for module in run.model.modules()}
        train_mode(run.model)
        for module in run.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        devices = [run.device] if run.device.type == "cuda" else []
        total = 0.0
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                for index in range(len(val_set)):
                    image, target = val_set[index]
                    images, targets = to_device([image], [target], run.device)
                    with torch.autocast(
                        run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None
                    ):
                        losses = run.model(images, targets)
                    total += float(sum(losses.values()))
        finally:
            for module, training in modes.items():
                module.training = training
        value[0] = total / len(val_set)
    return float(distributed.broadcast(value, run.world)[0])
