"""Prometheus metrics (every one labelled by model) and the JSON Lines request log."""

from __future__ import annotations

import json
import logging
import logging.handlers
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
COUNT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))


class Metrics:
    """The server's metrics in their own registry (several servers in one process stay apart).

    ``detflow_requests_total{model,status}``, ``detflow_request_latency_seconds{model}`` (whole
    request), ``detflow_inference_latency_seconds{model}``, ``detflow_batch_size{model}``,
    ``detflow_detections_per_image{model}``, ``detflow_detection_score{model}``,
    ``detflow_detections_by_class_total{model,class_name}``, ``detflow_errors_total{kind}``,
    ``detflow_queue_depth{model}``, ``detflow_shadow_dropped_total{model}``,
    ``detflow_model_reloads_total{model,result}``, ``detflow_model_info{model,model_id}``,
    ``detflow_drift_psi{model,signal}``.
    """

    def __init__(self):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "detflow_requests", "HTTP requests by status", ["model", "status"], registry=registry
        )
        self.latency = Histogram(
            "detflow_request_latency_seconds",
            "Whole request, upload to response",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "detflow_inference_latency_seconds",
            "ONNX Runtime run of one image",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch = Histogram(
            "detflow_batch_size",
            "Images per worker run",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.detections = Histogram(
            "detflow_detections_per_image",
            "Detections returned per image",
            ["model"],
            buckets=COUNT_BUCKETS,
            registry=registry,
        )
        self.scores = Histogram(
            "detflow_detection_score",
            "Score of each returned detection",
            ["model"],
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self.classes = Counter(
            "detflow_detections_by_class",
            "Returned detections per class",
            ["model", "class_name"],
            registry=registry,
        )
        self.errors = Counter(
            "detflow_errors", "Rejected or failed requests by kind", ["kind"], registry=registry
        )
        self.queue_depth = Gauge(
            "detflow_queue_depth", "Images waiting", ["model"], registry=registry
        )
        self.shadow_dropped = Counter(
            "detflow_shadow_dropped",
            "Mirrored images dropped (shadow queue full)",
            ["model"],
            registry=registry,
        )
        self.reloads = Counter(
            "detflow_model_reloads", "Hot reloads by result", ["model", "result"], registry=registry
        )
        self.info = Gauge(
            "detflow_model_info",
            "1 for the loaded model id",
            ["model", "model_id"],
            registry=registry,
        )

        self.drift = Gauge(
            "detflow_drift_psi",
            "Population stability index of the recent window against the reference",
            ["model", "signal"],
            registry=registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe_detections(self, model: str, output: dict, class_names: list[str]) -> None:
        self.detections.labels(model).observe(len(output["scores"]))
        for score in output["scores"]:
            self.scores.labels(model).observe(float(score))
        labels, counts = np.unique(np.asarray(output["labels"], np.int64), return_counts=True)
        for label, count in zip(labels, counts, strict=True):
            self.classes.labels(model, class_names[int(label) - 1]).inc(int(count))

    def set_model(self, model: str, model_id: str, previous: str | None = None) -> None:
        if previous is not None and previous != model_id:
            self.info.labels(model, previous).set(0)
        self.info.labels(model, model_id).set(1)


class RequestLog:
    """One JSON object per line (``ts``, ``request_id``, ``model``, ``model_id``, ``shadow``,
    ``client``, ``latency_ms``, ``detections``, ``mean_score``, ``classes``), rotated at
    ``max_mb`` with ``backups`` old files kept; ``path`` None logs nothing."""

    def __init__(self, path: str | Path | None, *, max_mb: float = 50.0, backups: int = 5):
        self._logger = None
        if path is None:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=int(max_mb * 1024 * 1024), backupCount=backups, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger = logging.Logger(f"detflow.serve.requests.{id(self)}")
        self._logger.addHandler(handler)
        self._logger.propagate = False

    def write(self, **record) -> None:
        if self._logger is not None:
            self._logger.info(json.dumps({"ts": round(time.time(), 3), **record}))

    def close(self) -> None:
        if self._logger is not None:
            for handler in list(self._logger.handlers):
                handler.close()
                self._logger.removeHandler(handler)
