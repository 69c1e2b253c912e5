"""Optimizers (SGD, Adam, AdamW with a backbone learning-rate factor) and learning-rate
schedules (linear warmup, then step, cosine, exponential or reduce-on-plateau).

A :class:`Schedule` sets each parameter group's learning rate to ``base_lr × factor`` after
every optimizer step and after every epoch's validation; its state is a dict of numbers, so
a checkpoint holding it loads with ``weights_only=True``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from detflow.core.errors import require_choice
from detflow.model.backbone import parameter_groups

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("step", "cosine", "exponential", "plateau")


def build_optimizer(
    model: nn.Module,
    *,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    backbone_lr_factor: float = 1.0,
) -> torch.optim.Optimizer:
    """Two parameter groups: the backbone's trunk at ``lr × backbone_lr_factor``, the rest
    (FPN, RPN, heads) at ``lr``. Frozen parameters are included so that unfreezing them
    later needs no new optimizer; without a gradient they are not updated."""
    require_choice("train.optimizer", name, OPTIMIZERS)
    backbone, head = parameter_groups(model)
    groups = [
        {"params": head, "lr": lr, "name": "head"},
        {"params": backbone, "lr": lr * backbone_lr_factor, "name": "backbone"},
    ]
    for group in groups:
        group["base_lr"] = group["lr"]
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
    optimizer = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return optimizer(groups, lr=lr, weight_decay=weight_decay)


class Schedule:
    """Learning-rate factor per optimizer step: linear warmup over ``warmup_steps`` times
    the ``kind`` decay. ``step``: × ``gamma`` once each number of epochs in ``milestones`` is
    done (as torch's MultiStepLR); ``cosine``: to 0 at the end of ``total_steps``;
    ``exponential``: × ``gamma`` every epoch; ``plateau``: × ``gamma`` when val mAP50 has not
    improved for more than ``patience`` epochs."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        kind: str,
        warmup_steps: int,
        steps_per_epoch: int,
        total_steps: int,
        gamma: float = 0.1,
        milestones: tuple[int, ...] = (),
        patience: int = 2,
    ):
        require_choice("train.schedule", kind, SCHEDULES)
        self.optimizer, self.kind, self.gamma = optimizer, kind, gamma
        self.warmup, self.per_epoch = warmup_steps, max(steps_per_epoch, 1)
        self.total, self.milestones, self.patience = total_steps, milestones, patience
        self.state = {"step": 0, "epoch": 0, "plateau_scale": 1.0, "best": -1.0, "bad_epochs": 0}
        self._apply()

    def factor(self) -> float:
        step, epoch = self.state["step"], self.state["epoch"]
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0
        if self.kind == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * min(step, self.total) / max(self.total, 1)))
        elif self.kind == "step":
            decay = self.gamma ** sum(epoch >= m for m in self.milestones)
        elif self.kind == "exponential":
            decay = self.gamma**epoch
        else:
            decay = self.state["plateau_scale"]
        return warm * decay

    def step(self) -> None:
        """After each optimizer step."""
        self.state["step"] += 1
        self._apply()

    def end_epoch(self, val_map50: float) -> None:
        """After each epoch's validation (the plateau schedule watches ``val_map50``)."""
        state = self.state
        state["epoch"] += 1
        if val_map50 > state["best"] + 1e-4:
            state["best"], state["bad_epochs"] = float(val_map50), 0
        else:
            state["bad_epochs"] += 1
        if self.kind == "plateau" and state["bad_epochs"] > self.patience:
            state["plateau_scale"] *= self.gamma
            state["bad_epochs"] = 0
        self._apply()

    def _apply(self) -> None:
        factor = self.factor()
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)
        self._apply()
