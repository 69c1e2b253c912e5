"""Training torchvision detectors on canonical datasets.

:func:`train_detector` trains for ``train.epochs``, validating after each epoch (val mAP50
picks ``best.pt``, drives the plateau schedule and early stopping) and writing ``last.pt``
(and ``best.pt`` when val mAP50 improved) atomically at the end of every epoch, with all the
state a resume needs (:mod:`detflow.model.checkpoint_file`). Resumed on CPU, a run killed at
any point ends with exactly the weights and metrics of an uninterrupted run: the random generators
are restored at the epoch boundary. Under ``torchrun`` it trains with DDP
(:mod:`detflow.train.distributed`); only rank 0 validates, writes and reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from detflow.core import seeding
from detflow.core.errors import ConfigError, DetflowError
from detflow.core.faults import maybe_kill
from detflow.data import manifest
from detflow.data.torch_dataset import DetectionDataset, set_epoch, train_loader
from detflow.evaluate.inference import evaluate_model
from detflow.model.backbone import check_stage_count, set_trainable_stages, train_mode
from detflow.model.build import AUTO, build_model
from detflow.model.checkpoint_file import (
    SCHEMA,
    check_classes,
    read_checkpoint,
    save_checkpoint,
    stored_postprocess,
)
from detflow.model.postprocess import model_kwargs
from detflow.model.postprocess_config import DEFAULT_MAX_DETECTIONS, PostprocessOptions
from detflow.train import auto_model, data_check, distributed, model_choice, stall
from detflow.train.auto_schedule import resolve_schedule
from detflow.train.optimizers import Schedule, build_optimizer
from detflow.train.options import RESUMABLE_KEYS, TrainOptions

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``train.device``: ``auto`` → CUDA when available, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA GPU is available; use auto or cpu")
    return torch.device(device)


@dataclasses.dataclass
class _Run:
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
    lrs: dict = dataclasses.field(default_factory=dict)  # at the last optimizer step
    stall_warned: bool = False
    history: list = dataclasses.field(default_factory=list)
    best: dict = dataclasses.field(
        default_factory=lambda: {"map50": -1.0, "epoch": 0, "since": 0, "stopped": False}
    )


def train_detector(
    *,
    model_config: dict,
    postprocess: PostprocessOptions,
    train_json: str | Path,
    val_json: str | Path,
    out_dir: str | Path,
    options: TrainOptions,
    config: dict | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    test_json: str | Path | None = None,
    on_data_check: Callable[[dict], None] | None = None,
) -> dict:
    """Train ``model_config`` on ``train_json`` with ``options``, validate on ``val_json``
    (post-processed by ``postprocess``), write ``out_dir/{best,last}.pt``; return the best
    epoch's metrics.

    Before the first step the model is checked against the train split
    (:mod:`detflow.train.data_check`: the data report, best possible recall, budgets against
    the densest images, of ``test_json`` too when given); the result is logged, stored in the
    checkpoints (``data_check``) and handed to ``on_data_check(check)`` on rank 0.
    ``on_epoch_end(epoch, metrics)`` runs on rank 0 after each epoch's checkpoints; on resume
    it is first called for each epoch already done, so a fresh logger gets every epoch.
    """
    device = resolve_device(options.device)
    world = distributed.init(device)
    try:
        run = _setup(
            model_config,
            postprocess,
            train_json,
            options,
            world,
            distributed.device_for(world, device),
            test_json,
        )
        run.meta["config"] = config or {}
        if on_data_check and world.is_main:
            on_data_check(run.meta["data_check"])
        val_set = DetectionDataset(val_json)
        check_classes(run.meta["class_names"], val_set.class_names, where=val_json)
        return _fit(run, val_set, Path(out_dir), on_epoch_end)
    finally:
        distributed.shutdown(world)


def _setup(model_config, postprocess, train_json, options, world, device, test_json) -> _Run:
    torch.set_num_threads(options.threads or max(1, (os.cpu_count() or 1) // world.size))
    train_set = DetectionDataset(train_json)
    model_config, postprocess, check = _check_data(
        model_config, postprocess, train_set, test_json, world
    )
    seeding.seed_everything(options.seed)  # after the check's model: training's RNG untouched
    if options.aspect_ratio_grouping and world.size > 1:
        raise ConfigError(
            "train.aspect_ratio_grouping=true is not supported with several processes "
            "(ranks would run different numbers of steps); set it to false for torchrun"
        )
    model = build_model(
        **model_config, num_classes=len(train_set.class_names), **model_kwargs(postprocess)
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
    options, choices = resolve_schedule(options, steps_per_epoch=steps, images=len(train_set))
    _log_choices(choices, world)
    check["auto"].update(choices)
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
    amp_dtype, scaler = _amp(options.amp, device)
    meta = {
        "schema": SCHEMA,
        "model": dict(model_config),
        "postprocess": postprocess.to_dict(),
        "class_names": train_set.class_names,
        "train_options": dataclasses.asdict(options),
        "world_size": world.size,
        "data_check": check,
    }
    return _Run(
        options,
        postprocess,
        world,
        device,
        model,
        loader,
        optimizer,
        schedule,
        scaler,
        amp_dtype,
        meta,
    )


def _check_data(model_config, postprocess, train_set, test_json, world):
    """:func:`detflow.train.data_check.check_data` on a from-scratch copy of the model, built
    with the defaults where the config says ``auto``; then every ``auto`` resolved from it
    (``model.name: auto``: :mod:`detflow.train.model_choice`). Returns the resolved model
    config and post-processing, and the check."""
    test = manifest.load_dataset(test_json) if test_json else None

    def check(config: dict):
        model = build_model(
            **{**config, "weights": "none", "backbone_weights": "none"},
            num_classes=len(train_set.class_names),
            **model_kwargs(postprocess.with_max_detections(DEFAULT_MAX_DETECTIONS)),
        )
        found = data_check.check_data(model, train_set.dataset, test_dataset=test)
        config, resolved, _ = auto_model.resolve_auto(
            config, postprocess, model, found, train_set.dataset
        )
        return config, resolved, found  # found["auto"]: the choices

    if model_config.get("name") == AUTO:
        model_config, postprocess, found = model_choice.choose_model(model_config, check)
    else:
        model_config, postprocess, found = check(model_config)
    if world.is_main:
        log.info(data_check.summary_line(found))
        _log_choices(found["auto"], world)
        for warning in found["budgets"]["warnings"]:
            log.warning("data check: %s", warning)
    return model_config, postprocess, found


def _log_choices(choices: dict, world: distributed.World) -> None:
    if world.is_main:
        for key, choice in choices.items():
            log.info("auto: %s=%s (%s)", key, choice["value"], choice["reason"])


def _amp(mode: str, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
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


def _fit(run: _Run, val_set, out_dir: Path, on_epoch_end) -> dict:
    options, world = run.options, run.world
    start = _resume(run, out_dir / "last.pt") if options.resume else 1
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
        metrics.update(_validate(run, val_set))
        metrics["val_loss"] = _val_loss(run, val_set)
        run.schedule.end_epoch(metrics["val_map50"])
        _record(run, metrics, out_dir)
        _check_stall(run)
        maybe_kill("train.epoch")
        if on_epoch_end and world.is_main:
            on_epoch_end(epoch, metrics)
    if not run.history:
        raise DetflowError(f"{out_dir}: no epoch trained (train.epochs={options.epochs})")
    return run.history[run.best["epoch"] - 1]


def _check_stall(run: _Run) -> None:
    """Warn once (rank 0) when the run has stalled (:mod:`detflow.train.stall`)."""
    if run.stall_warned or not run.world.is_main:
        return
    steps = max(1, -(-len(run.loader) // run.options.accumulate))
    if stall.stalled(run.history, warmup_epochs=-(-run.options.warmup_steps // steps)):
        run.stall_warned = True
        log.warning(
            stall.stall_warning(run.history, check=run.meta["data_check"], lr=run.options.lr)
        )


def _train_epoch(run: _Run, net: nn.Module, epoch: int, out_dir: Path) -> dict:
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
        images, targets = _to_device(images, targets, run.device)
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


def _to_device(images, targets, device):
    """Inputs on the training device. (With ``channels_last`` the weights carry the memory
    format: convolutions follow it, and the model batches the images itself.)"""
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [
        {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
    ]
    return images, targets


def _check_finite(loss: torch.Tensor, epoch: int, step: int, out_dir: Path) -> None:
    if not torch.isfinite(loss):
        raise DetflowError(
            f"non-finite loss {loss.item()} at epoch {epoch} step {step}; lower train.lr or "
            f"set train.grad_clip_norm (last good checkpoint kept: {out_dir / 'last.pt'})"
        )


def _backward(loss: torch.Tensor, scaler) -> None:
    (scaler.scale(loss) if scaler else loss).backward()


def _optimizer_step(run: _Run) -> None:
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


def _validate(run: _Run, val_set) -> dict:
    """Val mAP50 and mAP50-95, computed on rank 0 and shared with every rank."""
    values = torch.zeros(2, dtype=torch.float64, device=run.device)
    if run.world.is_main:
        val = evaluate_model(run.model, val_set, postprocess=run.postprocess, device=run.device)
        values = torch.tensor(
            [val["map50"], val["map50_95"]], dtype=torch.float64, device=run.device
        )
    values = distributed.broadcast(values, run.world).tolist()
    return {"val_map50": values[0], "val_map50_95": values[1]}


def _val_loss(run: _Run, val_set) -> float:
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
                    images, targets = _to_device([image], [target], run.device)
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


def _record(run: _Run, metrics: dict, out_dir: Path) -> None:
    """Update the history and early stopping; write best.pt (if improved), then last.pt."""
    best, epoch, patience = run.best, metrics["epoch"], run.options.early_stopping_patience
    run.history.append(metrics)
    improved = metrics["val_map50"] > best["map50"]
    if improved:
        best.update(map50=metrics["val_map50"], epoch=epoch, since=0)
    else:
        best["since"] += 1
    best["stopped"] = bool(patience and best["since"] >= patience and epoch < run.options.epochs)
    if run.world.is_main:
        state = _state(run, metrics)
        out_dir.mkdir(parents=True, exist_ok=True)
        if improved:
            save_checkpoint(state, out_dir / "best.pt")
        save_checkpoint(state, out_dir / "last.pt")
    _log_epoch(metrics, run.options.epochs, run.world)
    if best["stopped"]:
        log.info("early stopping: val mAP50 has not improved for %d epochs", best["since"])


def _state(run: _Run, metrics: dict) -> dict:
    return {
        **run.meta,
        "epoch": metrics["epoch"],
        "metrics": metrics,
        "history": list(run.history),
        "model_state": run.model.state_dict(),
        "optimizer_state": run.optimizer.state_dict(),
        "scheduler_state": run.schedule.state_dict(),
        "scaler_state": run.scaler.state_dict() if run.scaler else {},
        "train_state": dict(run.best),
        "rng_state": seeding.get_state(run.loader.generator),
    }


def _resume(run: _Run, last: Path) -> int:
    """Restore ``last.pt`` into ``run``; return the first epoch to train."""
    if not last.exists():
        log.info("train.resume: no %s yet; starting at epoch 1", last)
        return 1
    state = read_checkpoint(last, device="cpu")  # RNG states must stay CPU tensors
    _check_resumable(state, run, last)
    run.model.load_state_dict(state["model_state"])
    run.optimizer.load_state_dict(state["optimizer_state"])
    run.schedule.load_state_dict(state["scheduler_state"])
    if run.scaler and state["scaler_state"]:
        run.scaler.load_state_dict(state["scaler_state"])
    run.history, run.best = list(state["history"]), dict(state["train_state"])
    patience = run.options.early_stopping_patience  # may differ from the killed run's
    run.best["stopped"] = bool(
        patience and run.best["since"] >= patience and state["epoch"] < run.options.epochs
    )
    seeding.set_state(state["rng_state"], run.loader.generator)
    log.info("train.resume: continuing from %s (epoch %d done)", last, state["epoch"])
    return state["epoch"] + 1


def _check_resumable(state: dict, run: _Run, path: Path) -> None:
    """The checkpoint must come from the same model, classes, training options and
    post-processing."""
    meta = run.meta
    saved, now = dict(state.get("train_options", {})), dict(meta["train_options"])
    for key in RESUMABLE_KEYS:
        saved.pop(key, None)
        now.pop(key, None)
    changed = [f"train.{k}" for k in sorted(now) if saved.get(k) != now[k]]
    for key in ("model", "class_names", "world_size"):
        if state.get(key, 1 if key == "world_size" else None) != meta[key]:
            changed.append(key)
    if "postprocess" not in state or stored_postprocess(state) != run.postprocess:
        changed.append("postprocess")
    if changed:
        raise ConfigError(
            f"train.resume: {path} was trained with other settings ({', '.join(changed)}); "
            "restore them, or set train.resume=false to start over"
        )


def _log_epoch(metrics: dict, epochs: int, world: distributed.World) -> None:
    if world.is_main:
        log.info(
            "epoch %d/%d: loss %.4f, val loss %.4f, val mAP50 %.4f, mAP50-95 %.4f, %.2f img/s, "
            "lr %.5f",
            metrics["epoch"],
            epochs,
            metrics["train_loss"],
            metrics["val_loss"],
            metrics["val_map50"],
            metrics["val_map50_95"],
            metrics["train_images_per_s"],
            metrics["lr"],
        )
