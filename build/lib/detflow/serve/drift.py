"""Drift: the signals of the last ``window`` images against the model's ``reference.json``.

Every ``every`` images (once the window holds ``min_images``) the population stability
index of each signal (:mod:`detflow.deploy.reference`: width, height, brightness, detections
per image, score, class mix) is computed; the metrics show it as
``detflow_drift_psi{model,signal}``, and a signal that crosses ``threshold`` logs a warning
(once, until it falls back under).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from detflow.deploy.reference import NUMERIC_SIGNALS, class_shares, psi, shares, values_of

log = logging.getLogger("detflow.serve.drift")


class DriftMonitor:
    """``observe(signals)`` per answered image; ``publish(signal, value)`` receives each PSI."""

    def __init__(
        self,
        model: str,
        reference: dict,
        class_names: list[str],
        *,
        window: int,
        threshold: float,
        min_images: int = 50,
        every: int = 10,
        publish: Callable[[str, float], None] | None = None,
    ):
        self.model, self.reference, self.class_names = model, reference, class_names
        self.threshold, self.min_images, self.every = threshold, min_images, every
        self.publish = publish
        self.window: deque[dict] = deque(maxlen=window)
        self.scores: dict[str, float] = {}
        self._over: set[str] = set()
        self._seen = 0
        self._lock = threading.Lock()

    def observe(self, signals: dict) -> None:
        with self._lock:
            self.window.append(signals)
            self._seen += 1
            if len(self.window) >= self.min_images and self._seen % self.every == 0:
                self._update(list(self.window))

    def _update(self, window: list[dict]) -> None:
        for name in NUMERIC_SIGNALS:
            bins = self.reference.get("signals", {}).get(name)
            values = values_of(window, name)
            if bins is None or len(values) == 0:
                continue
            self._set(name, psi(bins["shares"], shares(values, bins["edges"])))
        reference_mix = self.reference.get("classes") or {}
        labels = [label for item in window for label in item["labels"]]
        if reference_mix and labels:
            current = class_shares(labels, self.class_names)
            names = sorted(reference_mix)
            self._set(
                "classes",
                psi([reference_mix[n] for n in names], [current.get(n, 0) for n in names]),
            )

    def _set(self, signal: str, value: float) -> None:
        self.scores[signal] = value
        if self.publish is not None:
            self.publish(signal, value)
        if value > self.threshold and signal not in self._over:
            self._over.add(signal)
            log.warning(
                "%s: drift on %s: PSI %.3f over the last %d images > serve.drift_threshold %.3f",
                self.model,
                signal,
                value,
                len(self.window),
                self.threshold,
            )
        elif value <= self.threshold:
            self._over.discard(signal)
