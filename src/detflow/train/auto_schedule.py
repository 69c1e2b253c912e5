"""``train.epochs: auto`` and ``train.warmup_steps: auto``: the schedule's length scaled to
the dataset, resolved once the train loader (so the optimizer steps per epoch) is known.

- ``epochs``: enough epochs for about :data:`TARGET_STEPS` optimizer steps (what the default
  recipe needs to converge from ImageNet weights on the bundled set: 8 epochs of 71 steps),
  between :data:`MIN_EPOCHS` and :data:`MAX_EPOCHS`. A small dataset gets more passes over
  it, a large one fewer (each of its epochs already holds many steps).
- ``warmup_steps``: :data:`WARMUP_STEPS`, but never more than one epoch (a warmup longer than
  an epoch keeps a tiny dataset's first epochs at a near-zero learning rate).
"""

from __future__ import annotations

import dataclasses
import math

from detflow.train.options import AUTO, TrainOptions

TARGET_STEPS = 560
MIN_EPOCHS, MAX_EPOCHS = 3, 40
WARMUP_STEPS = 50


def resolve_schedule(
    options: TrainOptions, *, steps_per_epoch: int, images: int
) -> tuple[TrainOptions, dict]:
    """``options`` with ``epochs``/``warmup_steps`` resolved where they are ``auto``, and the
    choices ``{"train.<key>": {"value", "reason"}}`` (empty when nothing was ``auto``).
    ``steps_per_epoch``: optimizer steps per epoch; ``images``: train images per epoch."""
    steps = max(int(steps_per_epoch), 1)
    changes, choices = {}, {}
    if options.epochs == AUTO:
        wanted = math.ceil(TARGET_STEPS / steps)
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, wanted))
        changes["epochs"] = epochs
        choices["train.epochs"] = {
            "value": epochs,
            "reason": f"{images} train images = {steps} optimizer steps per epoch; about "
            f"{TARGET_STEPS} steps in all, {MIN_EPOCHS}..{MAX_EPOCHS} epochs",
        }
    if options.warmup_steps == AUTO:
        warmup = min(WARMUP_STEPS, steps)
        changes["warmup_steps"] = warmup
        choices["train.warmup_steps"] = {
            "value": warmup,
            "reason": f"{WARMUP_STEPS} steps, at most one epoch ({steps} steps)",
        }
    return dataclasses.replace(options, **changes), choices
