"""Deterministic fault injection: kill this process at a named point, for crash/resume tests.

Code that must survive a crash calls :func:`maybe_kill` at the points where one could happen
(``maybe_kill("train.batch")`` after each training batch, for instance). Nothing happens unless
the environment variable ``DETFLOW_KILL_AT`` names that point::

    DETFLOW_KILL_AT=train.batch:7            # SIGKILL on the 7th call of "train.batch"
    DETFLOW_KILL_AT=train.batch:7,collect.image:3   # several points (whichever comes first)

Calls are counted per point and per process, from 1. SIGKILL cannot be caught: no ``finally``
block, atexit handler or buffered write runs, exactly as when the machine kills a stage.
Points in use, one or more per stage (:data:`POINTS`): ``collect.image`` (after each image
is written), ``clean.image`` (after each image), ``split.output`` (after each split file),
``augment.image`` (after each source image and its copies), ``train.batch`` (after each
training batch), ``train.epoch`` (after the epoch's checkpoints are written),
``evaluate.image`` (after each test image's prediction), ``export.image`` (after each parity
image) and ``optimize.variant`` (after each variant is built).
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

from detflow.core.errors import ConfigError

ENV = "DETFLOW_KILL_AT"
POINTS = (
    "collect.image",
    "clean.image",
    "split.output",
    "augment.image",
    "train.batch",
    "train.epoch",
    "evaluate.image",
    "export.image",
    "optimize.variant",
)
_calls: Counter[str] = Counter()


def kill_points(spec: str | None = None) -> dict[str, int]:
    """Parse ``point:k[,point:k]`` (default: ``$DETFLOW_KILL_AT``) into ``{point: k}``."""
    spec = os.environ.get(ENV, "") if spec is None else spec
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, count = item.rpartition(":")
        if not point or not count.isdigit() or int(count) < 1:
            raise ConfigError(f"{ENV}={spec!r}: use POINT:K with K >= 1, e.g. train.batch:7")
        points[point] = int(count)
    return points


def maybe_kill(point: str) -> None:
    """Count a call of ``point``; SIGKILL this process if ``$DETFLOW_KILL_AT`` asks for it."""
    _calls[point] += 1
    if kill_points().get(point) == _calls[point]:
        print(f"detflow: {ENV}: SIGKILL at {point}:{_calls[point]}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Forget the call counts (tests that call :func:`maybe_kill` in one process)."""
    _calls.clear()
