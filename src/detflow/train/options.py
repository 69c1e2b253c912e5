"""``train.*``: the training options, validated once (see conf/config.yaml for each key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from detflow.core.errors import ConfigError, require_positive
from detflow.core.options import ConfigOptions
from detflow.train.optimizers import OPTIMIZERS, SCHEDULES

AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
AUTO = "auto"  # epochs / warmup_steps scaled to the dataset (detflow.train.auto_schedule)
# torchvision's reference recipe (0.02 at 16 images per step) scaled to the default 4
DEFAULT_LR = 0.005
# train.* keys a resumed run may change: they do not change what the remaining epochs compute
RESUMABLE_KEYS = ("resume", "epochs", "early_stopping_patience", "workers", "threads", "device")


@dataclass(frozen=True, kw_only=True)
class TrainOptions(ConfigOptions):
    """The validated ``train.*``: ``TrainOptions.from_config(cfg["train"])``."""

    SECTION = "train"

    epochs: int | Literal["auto"] = AUTO
    batch_size: int = 4
    optimizer: str = field(default="sgd", metadata={"choices": OPTIMIZERS})
    lr: float = DEFAULT_LR
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    backbone_lr_factor: float = 1.0
    schedule: str = field(default="cosine", metadata={"choices": SCHEDULES})
    warmup_steps: int | Literal["auto"] = AUTO
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    plateau_patience: int = 2
    grad_clip_norm: float | None = 10.0
    accumulate: int = 1
    amp: str = field(default="none", metadata={"choices": AMP_MODES})
    channels_last: bool = True
    unfreeze: dict[int, int] | None = None
    early_stopping_patience: int | None = None
    resume: bool = False
    workers: int = 0
    aspect_ratio_grouping: bool = False
    threads: int = 0
    device: str = field(default="auto", metadata={"choices": DEVICES})
    seed: int = 0

    def check(self) -> None:
        if self.unfreeze is not None:
            object.__setattr__(self, "unfreeze", _unfreeze_plan(self.unfreeze))
        for key in ("lr", "gamma"):
            require_positive(f"train.{key}", getattr(self, key))
        for key in ("momentum", "weight_decay", "backbone_lr_factor"):
            require_positive(f"train.{key}", getattr(self, key), allow_zero=True)
        _require_auto_or_int("train.epochs", self.epochs, allow_zero=False)
        _require_auto_or_int("train.warmup_steps", self.warmup_steps, allow_zero=True)
        for key in ("batch_size", "accumulate"):
            require_positive(f"train.{key}", getattr(self, key), integer=True)
        for key in ("workers", "plateau_patience", "threads", "seed"):
            require_positive(f"train.{key}", getattr(self, key), allow_zero=True, integer=True)
        if self.early_stopping_patience is not None:
            require_positive(
                "train.early_stopping_patience", self.early_stopping_patience, integer=True
            )
        if self.grad_clip_norm is not None:
            require_positive("train.grad_clip_norm", self.grad_clip_norm)
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ConfigError(
                f"train.nesterov=true needs train.optimizer=sgd and train.momentum > 0 "
                f"(got {self.optimizer}, momentum {self.momentum})"
            )
        if any(m < 1 for m in self.milestones):
            raise ConfigError(f"train.milestones={list(self.milestones)}: epochs >= 1")

    def trainable_stages(self, epochs_done: int, default: int) -> int:
        """Trainable backbone stages for the epoch after ``epochs_done`` completed epochs."""
        if not self.unfreeze:
            return default
        started = [done for done in self.unfreeze if done <= epochs_done]
        return self.unfreeze[max(started)] if started else default


def _require_auto_or_int(key: str, value, *, allow_zero: bool) -> None:
    if value != AUTO:
        require_positive(key, value, allow_zero=allow_zero, integer=True)


def _unfreeze_plan(plan) -> dict[int, int]:
    """``{epochs done: trainable stages}``, e.g. ``{0: 0, 3: 3, 6: 6}``."""
    try:
        out = {int(k): int(v) for k, v in dict(plan).items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"train.unfreeze={plan!r}: a mapping {{epochs done: trainable backbone stages}}, "
            "e.g. {0: 0, 3: 3, 6: 6}"
        ) from exc
    if any(k < 0 or v < 0 for k, v in out.items()):
        raise ConfigError(f"train.unfreeze={plan!r}: epochs and stage counts must be >= 0")
    return out
