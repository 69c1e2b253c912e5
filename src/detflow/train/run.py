"""One training run's state, built once from a :class:`~detflow.train.plan.TrainingPlan`:
the model, the train loader, the optimizer, the schedule and mixed precision. Checkpoints
store its state (:mod:`detflow.train.resume`)."""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from detflow.core import seeding
from detflow.core.errors import ConfigError
from detflow.data.torch_dataset import DetectionDataset, train_loader
from detflow.model.backbone import check_stage_count
from detflow.model.build import build_model
from detflow.model.checkpoint_file import SCHEMA
from detflow.model.postprocess import model_kwargs
from detflow.model.postprocess_config import PostprocessOptions
from detflow.train import distributed
from detflow.train.optimizers import Schedule, build_optimizer
from detflow.train.options import TrainOptions
from detflow.train.plan import TrainingPlan

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``train.device``: ``auto`` → CUDA when available, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA GPU is available; use auto or cpu")
    return torch.device(device)


@dataclasses.dataclass
class TrainingRun:
    """Everything one training run holds; checkpoints store its state."""

    options: TrainOptions
    postprocess: PostprocessOptions
    world: distributed.World
    device: torch.device
    model: nn.Module
    loader: torch.utils.data.DataLoader
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    meta: dict
    plan: TrainingPlan
    lrs: dict = dataclasses.field(default_factory=dict)  # at the last optimizer step
    stall_warned: bool = False
    history: list = dataclasses.field(default_factory=list)
    best: dict = dataclasses.field(
        default_factory=lambda: {"map50": -1.0, "epoch": 0, "since": 0, "stopped": False}
    )


def build_run(
    plan: TrainingPlan, train_set: DetectionDataset, world: distributed.World, device
) -> TrainingRun:
    """The model (built once, as the plan says), loader, optimizer and schedule."""
    options = plan.options
    if options.aspect_ratio_grouping and world.size > 1:
        raise ConfigError(
            "train.aspect_ratio_grouping=true is not supported with several processes "
            "(ranks would run different numbers of steps); set it to false for torchrun"
        )
    seeding.seed_everything(options.seed)
    model = build_model(
        **plan.model, num_classes=len(plan.class_names), **model_kwargs(plan.postprocess)
    ).to(device)
    for stage_count in (options.unfreeze or {}).values():  # fail now, not epochs later
        check_stage_count(model, stage_count, key="train.unfreeze")
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = train_loader(
        train_set,
        batch_size=options.batch_size,
        seed=options.seed,
        workers=options.workers,
        aspect_ratio_grouping=options.aspect_ratio_grouping,
        rank=world.rank,
        world_size=world.size,
    )
    optimizer = build_optimizer(
        model,
        name=options.optimizer,
        lr=options.lr,
        weight_decay=options.weight_decay,
        momentum=options.momentum,
        nesterov=options.nesterov,
        backbone_lr_factor=options.backbone_lr_factor,
    )
    steps = -(-len(loader) // options.accumulate)  # optimizer steps per epoch
    schedule = Schedule(
        optimizer,
        kind=options.schedule,
        warmup_steps=options.warmup_steps,
        steps_per_epoch=steps,
        total_steps=steps * options.epochs,
        gamma=options.gamma,
        milestones=options.milestones,
        patience=options.plateau_patience,
    )
    amp_dtype, scaler = amp_mode(options.amp, device)
    meta = {
        "schema": SCHEMA,
        "model": dict(plan.model),
        "postprocess": plan.postprocess.to_dict(),
        "class_names": list(plan.class_names),
        "train_options": dataclasses.asdict(options),
        "world_size": world.size,
        "plan": plan.to_dict(),
        "tiles": tile_settings(plan),
    }
    return TrainingRun(
        options,
        plan.postprocess,
        world,
        device,
        model,
        loader,
        optimizer,
        schedule,
        scaler,
        amp_dtype,
        meta,
        plan,
    )


def tile_settings(plan: TrainingPlan) -> dict | None:
    """What a checkpoint tells inference of the plan's tiles (``state["tiles"]``): tile
    size and overlap (pixels) and the merge across tiles; None for whole images."""
    if not plan.tiles:
        return None
    keys = ("size", "overlap", "merge", "iou", "with_full_image", "metric")
    return {key: plan.tiles[key] for key in keys}


def amp_mode(mode: str, device: torch.device):
    """Autocast dtype and gradient scaler for ``train.amp`` (CUDA only)."""
    if mode == "none":
        return None, None
    if device.type != "cuda":
        log.info("train.amp=%s ignored on %s: mixed precision is used on CUDA only", mode, device)
        return None, None
    if mode == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.amp=bf16: this GPU has no bfloat16; use train.amp=fp16")
    if mode == "bf16":
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")
