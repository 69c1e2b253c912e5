"""Training torchvision detectors on canonical datasets (see :mod:`detflow.checkpoints`)."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from detflow.checkpoints import SCHEMA, save_checkpoint
from detflow.datasets import DetectionDataset, collate
from detflow.errors import DetflowError, require_choice, require_positive
from detflow.inference import evaluate_model
from detflow.models import build_model
from detflow.postprocess import model_kwargs

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    require_choice("train.device", device, ("auto", "cpu", "cuda"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_detector(
    *,
    model_config: dict,
    postprocess: dict,
    train_json: str | Path,
    val_json: str | Path,
    out_dir: str | Path,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    warmup_steps: int,
    seed: int,
    grad_clip_norm: float | None = None,
    device: str = "auto",
    threads: int = 0,
    config: dict | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train, validate each epoch, write ``out_dir/last.pt`` and ``out_dir/best.pt`` (by val
    mAP50); return the best epoch's metrics."""
    for key, value in (
        ("train.epochs", epochs),
        ("train.batch_size", batch_size),
        ("train.lr", lr),
    ):
        require_positive(key, value)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    seed_everything(seed)
    train_set, val_set = DetectionDataset(train_json), DetectionDataset(val_json)
    target = resolve_device(device)
    model = build_model(
        **model_config, num_classes=len(train_set.class_names), **model_kwargs(postprocess)
    )
    model.to(target)
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
        num_workers=0,
    )
    optimizer, scheduler = _sgd_warmup_cosine(
        model,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        warmup=warmup_steps,
        total=epochs * len(loader),
    )
    meta = {
        "schema": SCHEMA,
        "model": dict(model_config),
        "postprocess": dict(postprocess),
        "class_names": train_set.class_names,
        "config": config or {},
    }
    best, out_dir = None, Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(1, epochs + 1):
        loss, seconds = _train_epoch(
            model, loader, optimizer, scheduler, target, epoch, grad_clip_norm
        )
        val = evaluate_model(model, val_set, device=target)
        metrics = {
            "epoch": epoch,
            "train_loss": loss,
            "lr": optimizer.param_groups[0]["lr"],
            "train_images_per_s": len(train_set) / seconds,
            "val_map50": val["map50"],
            "val_map50_95": val["map50_95"],
        }
        state = {**meta, "epoch": epoch, "metrics": metrics, "model_state": model.state_dict()}
        save_checkpoint(
            {
                **state,
                "optimizer_state": optimizer.state_dict(),
                "scheduler_state": scheduler.state_dict(),
            },
            out_dir / "last.pt",
        )
        if best is None or metrics["val_map50"] > best["val_map50"]:
            best = metrics
            save_checkpoint(state, out_dir / "best.pt")
        log.info(
            "epoch %d/%d: loss %.4f, val mAP50 %.4f, mAP50-95 %.4f, %.2f img/s",
            epoch,
            epochs,
            loss,
            val["map50"],
            val["map50_95"],
            metrics["train_images_per_s"],
        )
        if on_epoch_end:
            on_epoch_end(epoch, metrics)
    return best


def _sgd_warmup_cosine(model, *, lr, momentum, weight_decay, warmup, total):
    """SGD on the trainable parameters; per-step linear warmup, then cosine decay to 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _train_epoch(model, loader, optimizer, scheduler, device, epoch, clip_norm):
    model.train()
    total, start = 0.0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None)
    for step, (images, targets) in enumerate(bar, start=1):
        images = [im.to(device) for im in images]
        targets = [
            {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
        ]
        losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise DetflowError(
                f"non-finite loss {loss.item()} at epoch {epoch} step {step}; "
                "lower train.lr (last good checkpoint kept)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        scheduler.step()
        total += loss.item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return total / max(len(loader), 1), time.perf_counter() - start
