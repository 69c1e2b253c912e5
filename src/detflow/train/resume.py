"""Checkpoints of a :class:`~detflow.train.run.TrainingRun` at each epoch's end, and resuming
from ``last.pt``: everything an interrupted run needs to end with exactly the weights and
metrics of an uninterrupted one (the random generators restored at the epoch boundary)."""

from __future__ import annotations

import logging
from pathlib import Path

from detflow.core import seeding
from detflow.core.errors import ConfigError
from detflow.model.checkpoint_file import read_checkpoint, save_checkpoint, stored_postprocess
from detflow.train import distributed
from detflow.train.options import RESUMABLE_KEYS
from detflow.train.run import TrainingRun

log = logging.getLogger(__name__)


def record_epoch(run: TrainingRun, metrics: dict, out_dir: Path) -> None:
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


def _state(run: TrainingRun, metrics: dict) -> dict:
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


def resume(run: TrainingRun, last: Path) -> int:
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


def _check_resumable(state: dict, run: TrainingRun, path: Path) -> None:
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
