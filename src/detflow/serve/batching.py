"""Worker threads per model: a bounded queue of images, grouped into runs.

Each model has one worker thread per ONNX Runtime session (``serve.sessions``; the sessions
take turns on the one queue, so a run on one can overlap a run on another). A worker takes
the first waiting image, then more until it holds ``max_batch`` or
``max_wait_ms`` has passed, and runs them as one batch on the model it holds at that moment
(a hot reload swaps the model between runs, never inside one): one ONNX Runtime call on the
graph with a batch axis (:mod:`detflow.deploy.batch_graph`; an OpenVINO model runs them on
parallel inference streams). Should a batch fail, its images run one by one, so one bad image
fails only its own request. A full queue raises :class:`QueueFull` (the API answers 503
with ``Retry-After``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detflow.core.files import read_json, sha256_file
from detflow.deploy.onnx_detector import OnnxDetector
from detflow.deploy.runtime import detect, detect_batch, model_file, model_threshold, open_model

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The model's queue holds ``queue_size`` images already."""


@dataclass(frozen=True)
class LoadedModel:
    """A model's sessions with its identity: ``model_id`` is ``<name>@<sha256[:12]>`` of the
    file; ``detectors`` one session per worker thread (``detector``: the first, for what they
    share: class names, metadata); ``card`` the ``model_card.json`` beside it (or the ONNX
    metadata when there is none); ``reference`` its ``reference.json``
    (:mod:`detflow.deploy.reference`) or None."""

    name: str
    path: Path
    detectors: tuple[OnnxDetector, ...]
    sha256: str
    card: dict
    reference: dict | None = None

    @property
    def detector(self) -> OnnxDetector:
        return self.detectors[0]

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.sha256[:12]}"


def load_model(
    name: str, path: str | Path, *, provider: str, threads: int, sessions: int = 1
) -> LoadedModel:
    """Open ``sessions`` sessions of the model at ``path`` (ONNX file or folder), each with
    ``threads`` threads (0: the cores shared out among the sessions), and warm them up;
    DetflowError if it cannot be loaded."""
    file = model_file(path)
    if threads == 0 and sessions > 1:
        threads = max(1, (os.cpu_count() or 1) // sessions)
    detectors = tuple(open_model(file, provider=provider, threads=threads) for _ in range(sessions))
    sha = sha256_file(file)
    # First runs allocate (ONNX Runtime's arena grows to what a run needs): not on a request;
    # seeded noise at a camera frame's size gives a run with many proposals.
    blank = np.zeros((3, 32, 32), np.float32)
    noise = np.random.default_rng(0).random((3, 480, 640), dtype=np.float32)
    for detector in detectors:
        detector(blank)
        detector(noise)
        detector.detect_batch([blank, blank])
    card_path = file.parent / "model_card.json"
    card = read_json(card_path) if card_path.is_file() else {}
    if not card or card.get("model_sha256") not in (None, sha):
        card = {"metadata": dict(detectors[0].metadata), "note": "no matching model_card.json"}
    reference_path = file.parent / "reference.json"  # the optimize stage's (drift monitoring)
    reference = read_json(reference_path) if reference_path.is_file() else None
    return LoadedModel(name, file, detectors, sha, card, reference)


@dataclass
class Job:
    """One image waiting: ``threshold`` None = the model's own."""

    image: np.ndarray
    threshold: float | None
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


class BatchWorker:
    """The queue and worker threads of one model (one thread per session of the model it
    holds); ``on_run(model, size)`` as each run starts, before any of its answers."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        max_batch: int,
        max_wait_ms: float,
        queue_size: int,
        on_run: Callable[[LoadedModel, int], None] | None = None,
    ):
        self.model = model
        self.max_batch, self.max_wait_s = max_batch, max_wait_ms / 1000
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self.on_run = on_run
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"serve-{model.name}-{i}")
            for i in range(len(model.detectors))
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    @property
    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self._threads)

    def submit(self, image: np.ndarray, threshold: float | None = None) -> Future:
        """Queue one ``[H, W, 3]`` uint8 RGB image; the future gives ``(output, latency_ms,
        model, batch_size)``: ``latency_ms`` is that of the run of ``batch_size`` images that
        included it. Raises QueueFull when the queue is full."""
        job = Job(image, threshold)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self.model.name}: {self.queue.maxsize} images queued") from None
        return job.future

    def swap(self, model: LoadedModel) -> LoadedModel:
        """Use ``model`` from the next run on; returns the one replaced."""
        old, self.model = self.model, model
        return old

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued images, then end the threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _take(self) -> list[Job]:
        try:
            batch = [self.queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = (
                    self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
                )
            except queue.Empty:
                break
            batch.append(job)
        return batch

    def _loop(self, index: int) -> None:
        """Worker thread ``index``: runs on session ``index`` of the model held at each run."""
        while not (self._stop.is_set() and self.queue.empty()):
            batch = self._take()
            if not batch:
                continue
            model = self.model  # one model per run: a reload lands between runs
            detector = model.detectors[index % len(model.detectors)]
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            size = len(batch)
            self._observe(model, size)  # before any answer: a client then sees it in /metrics
            left = self._run_batch(model, detector, batch) if size > 1 else batch
            for job in left:  # one by one: a single image, or a batch that failed
                try:
                    threshold = model_threshold(detector, job.threshold)
                    output, latency_ms = detect(detector, job.image, threshold)
                except Exception as exc:  # noqa: BLE001 - one bad run never ends the worker
                    log.exception("%s: inference failed", model.model_id)
                    job.future.set_exception(exc)
                else:
                    job.future.set_result((output, latency_ms, model, 1))

    def _observe(self, model: LoadedModel, size: int) -> None:
        if self.on_run is not None:
            try:
                self.on_run(model, size)
            except Exception:  # noqa: BLE001 - metrics never stop serving
                log.exception("on_run callback failed")

    @staticmethod
    def _run_batch(model: LoadedModel, detector: OnnxDetector, batch: list[Job]) -> list[Job]:
        """Run ``batch`` in one call on ``detector`` (a session of ``model``) and settle its
        futures; the jobs left to run one by one (all of them when the batch failed)."""
        try:
            thresholds = [model_threshold(detector, job.threshold) for job in batch]
            outputs, latency_ms = detect_batch(detector, [job.image for job in batch], thresholds)
        except Exception:  # noqa: BLE001 - each image is then run (and fails) on its own
            log.warning(
                "%s: a batch of %d failed; running its images one by one",
                model.model_id,
                len(batch),
                exc_info=True,
            )
            return batch
        for job, output in zip(batch, outputs, strict=True):
            job.future.set_result((output, latency_ms, model, len(batch)))
        return []
