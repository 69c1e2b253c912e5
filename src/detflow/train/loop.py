"""Training torchvision detectors on canonical datasets, as a plan says.

:func:`train_detector` takes a :class:`~detflow.train.plan.TrainingPlan` (every ``auto``
already decided from the data: :mod:`detflow.train.plan`), builds the model, loader and
optimizer once (:mod:`detflow.train.run`), and trains for the plan's epochs, validating after
each (val mAP50 picks ``best.pt``, drives the plateau schedule and early stopping:
:mod:`detflow.train.validation`) and writing ``last.pt`` (and ``best.pt`` when val mAP50
improved) atomically at the end of every epoch, with all the state a resume needs
(:mod:`detflow.train.resume`). Resumed on CPU, a run killed at any point ends with exactly the
weights and metrics of an uninterrupted run. Under ``torchrun`` it trains with DDP
(:mod:`detflow.train.distributed`); only rank 0 validates, writes and reports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from detflow.core.errors import DetflowError
from detflow.core.faults import maybe_kill
from detflow.data.torch_dataset import DetectionDataset, set_epoch
from detflow.model.backbone import set_trainable_stages, train_mode
from detflow.model.checkpoint_file import check_classes
from detflow.train import distributed, stall
from detflow.train.plan import TrainingPlan
from detflow.train.resume import record_epoch, resume
from detflow.train.run import TrainingRun, build_run, resolve_device
from detflow.train.validation import to_device, val_loss, validate

log = logging.getLogger(__name__)


def train_detector(
    *,
    plan: TrainingPlan,
    train_json: str | Path,
    val_json: str | Path,
    out_dir: str | Path,
    config: dict | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train as ``plan`` says on ``train_json`` (the split the plan was made from), validate
    on ``val_json`` (post-processed as the plan says), write ``out_dir/{best,last}.pt`` (the
    plan and ``config`` stored in them); return the best epoch's metrics.

    ``on_epoch_end(epoch, metrics)`` runs on rank 0 after each epoch's checkpoints; on resume
    it is first called for each epoch already done, so a fresh logger gets every epoch.
    """
    options = plan.options
    device = resolve_device(options.device)
    world = distributed.init(device)
    try:
        torch.set_num_threads(options.threads or max(1, (os.cpu_count() or 1) // world.size))
        train_set = DetectionDataset(train_json)
        check_classes(list(plan.class_names), train_set.class_names, where=train_json)
        run = build_run(plan, train_set, world, distributed.device_for(world, device))
        run.meta["config"] = config or {}
        val_set = DetectionDataset(val_json)
        check_classes(run.meta["class_names"], val_set.class_names, where=val_json)
        return _fit(run, val_set, Path(out_dir), on_epoch_end)
    finally:
        distributed.shutdown(world)


def _fit(run: TrainingRun, val_set, out_dir: Path, on_epoch_end) -> dict:
    options, world = run.options, run.world
    start = resume(run, out_dir / "last.pt") if options.resume else 1
    if on_epoch_end and world.is_main:
        for metrics in run.history:
            on_epoch_end(metrics["epoch"], metrics)
    net, trainable = run.model, None
    for epoch in range(start, options.epochs + 1):
        if run.best["stopped"]:
            break
        stages = options.trainable_stages(
            epoch - 1, run.meta["model"].get("trainable_backbone_layers", 3)
        )
        if stages != trainable:
            set_trainable_stages(run.model, stages, key="train.unfreeze")
            net, trainable = distributed.wrap(run.model, world, run.device), stages
        set_epoch(run.loader, epoch)
        metrics = _train_epoch(run, net, epoch, out_dir)
        metrics.update(validate(run, val_set))
        metrics["val_loss"] = val_loss(run, val_set)
        run.schedule.end_epoch(metrics["val_map50"])
        record_epoch(run, metrics, out_dir)
        _check_stall(run)
        maybe_kill("train.epoch")
        if on_epoch_end and world.is_main:
            on_epoch_end(epoch, metrics)
    if not run.history:
        raise DetflowError(f"{out_dir}: no epoch trained (train.epochs={options.epochs})")
    return run.history[run.best["epoch"] - 1]


def _check_stall(run: TrainingRun) -> None:
    """Warn once (rank 0) when the run has stalled (:mod:`detflow.train.stall`)."""
    if run.stall_warned or not run.world.is_main:
        return
    steps = max(1, -(-len(run.loader) // run.options.accumulate))
    if stall.stalled(run.history, warmup_epochs=-(-run.options.warmup_steps // steps)):
        run.stall_warned = True
        log.warning(stall.stall_warning(run.history, check=run.plan.check, lr=run.options.lr))


def _train_epoch(run: TrainingRun, net: nn.Module, epoch: int, out_dir: Path) -> dict:
    """One pass over the training batches; returns the mean losses, lr and throughput."""
    options, world = run.options, run.world
    net.train()
    train_mode(run.model)
    sums: dict[str, torch.Tensor] = {}
    run.lrs = {group["name"]: group["lr"] for group in run.optimizer.param_groups}
    images_seen, start, steps = 0, time.perf_counter(), len(run.loader)
    bar = tqdm(
        run.loader,
        desc=f"epoch {epoch}/{options.epochs}",
        unit="batch",
        leave=False,
        disable=None if world.is_main else True,
    )
    for step, (images, targets) in enumerate(bar, start=1):
        images, targets = to_device(images, targets, run.device)
        with torch.autocast(
            run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None
        ):
            losses = net(images, targets)
        loss = sum(losses.values())
        _check_finite(distributed.mean(loss.detach(), world), epoch, step, out_dir)
        sync = step % options.accumulate == 0 or step == steps
        no_sync = net.no_sync if world.distributed and not sync else contextlib.nullcontext
        with no_sync():
            _backward(loss / options.accumulate, run.scaler)
        if sync:
            _optimizer_step(run)
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float()
        images_seen += len(images)
        if not bar.disable:
            rate = images_seen * world.size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.1f}")
        maybe_kill("train.batch")
    seconds = time.perf_counter() - start
    names = sorted(sums)
    means = distributed.mean(torch.stack([sums[n] for n in names]) / max(steps, 1), world)
    components = {f"train_{n}": float(v) for n, v in zip(names, means.tolist(), strict=True)}
    return {
        "epoch": epoch,
        "train_loss": sum(components.values()),
        **components,
        "lr": run.lrs["head"],
        "lr_backbone": run.lrs["backbone"],
        "train_images_per_s": images_seen * world.size / seconds,
    }


def _check_finite(loss: torch.Tensor, epoch: int, step: int, out_dir: Path) -> None:
    if not torch.isfinite(loss):
        raise DetflowError(
            f"non-finite loss {loss.item()} at epoch {epoch} step {step}; lower train.lr or "
            f"set train.grad_clip_norm (last good checkpoint kept: {out_dir / 'last.pt'})"
        )


def _backward(loss: torch.Tensor, scaler) -> None:
    (scaler.scale(loss) if scaler else loss).backward()


def _optimizer_step(run: TrainingRun) -> None:
    """Unscale (fp16), clip the global gradient norm, step, zero, advance the schedule."""
    if run.scaler:
        run.scaler.unscale_(run.optimizer)
    if run.options.grad_clip_norm:
        params = [p for p in run.model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, run.options.grad_clip_norm)
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.lrs = {group["name"]: group["lr"] for group in run.optimizer.param_groups}
    run.optimizer.zero_grad(set_to_none=True)
    run.schedule.step()
