"""The HTTP API (FastAPI): ``POST /v1/detect``, ``GET /v1/model``, ``/healthz``, ``/readyz``,
``/metrics``.

``/v1/detect`` takes one image as the raw body (``image/*`` or ``application/octet-stream``)
or as a multipart upload (field ``image`` or ``file``) and answers the detections as
``detflow predict`` writes them (``box`` xyxy pixels of the uploaded image, ``class``,
``class_id``, ``score``; highest score first), with the model id and latencies;
``?annotated=true`` answers the image with the boxes drawn (PNG). Bad input gets a 4xx JSON
``{"error": kind, "detail": "..."}``; nothing a client sends ends a worker.

This module holds the routes and the :class:`Server` behind them; the handling of a detect
request is :mod:`detflow.serve.detect_request` (reading and decoding the upload:
:mod:`detflow.serve.upload`), which keeps the event loop free of decoding, drift, logging
and PNG encoding.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from detflow.deploy.reference import image_signals
from detflow.serve.batching import BatchWorker, LoadedModel, load_model
from detflow.serve.detect_request import handle_detect
from detflow.serve.drift import DriftMonitor
from detflow.serve.malloc import cap_malloc_arenas
from detflow.serve.monitoring import Metrics, RequestLog
from detflow.serve.options import ServeOptions
from detflow.serve.reload import ModelWatcher
from detflow.serve.routing import Router
from detflow.serve.upload import ApiError

log = logging.getLogger(__name__)


class Server:
    """The models, their workers, the router, metrics, request log and reload watcher."""

    def __init__(self, options: ServeOptions):
        self.options = options
        self.specs = options.model_specs()
        self.router = Router(self.specs)
        self.metrics = Metrics()
        self.request_log = RequestLog(None)  # opened by start(), once the models have loaded
        self.workers: dict[str, BatchWorker] = {}
        self.watcher: ModelWatcher | None = None
        self.drift: dict[str, DriftMonitor | None] = {}
        self.ready = False

    def start(self) -> None:
        """Load every model (DetflowError if one cannot be), start the workers and watcher."""
        opts = self.options
        for spec in self.specs:
            model = load_model(
                spec.name,
                spec.path,
                provider=opts.provider,
                threads=opts.threads,
                sessions=opts.sessions,
            )
            self.workers[spec.name] = BatchWorker(
                model,
                max_batch=opts.max_batch,
                max_wait_ms=opts.max_wait_ms,
                queue_size=opts.queue_size,
                on_run=lambda m, size: self.metrics.batch.labels(m.name).observe(size),
            )
            self.metrics.set_model(spec.name, model.model_id)
            self.drift[spec.name] = self._drift_monitor(model)
        self.request_log = RequestLog(
            opts.request_log, max_mb=opts.log_max_mb, backups=opts.log_backups
        )
        if opts.reload_interval_s > 0:
            self.watcher = ModelWatcher(
                self.workers,
                interval_s=opts.reload_interval_s,
                provider=opts.provider,
                threads=opts.threads,
                sessions=opts.sessions,
                on_swap=self._swapped,
                on_fail=lambda name, _: self.metrics.reloads.labels(name, "failed").inc(),
            )
        self.ready = True

    def stop(self) -> None:
        self.ready = False
        if self.watcher is not None:
            self.watcher.stop()
        for worker in self.workers.values():
            worker.stop()
        self.request_log.close()

    def _drift_monitor(self, model: LoadedModel) -> DriftMonitor | None:
        if model.reference is None:
            return None
        opts = self.options

        def publish(signal: str, value: float) -> None:
            self.metrics.drift.labels(model.name, signal).set(value)

        return DriftMonitor(
            model.name,
            model.reference,
            model.detector.class_names,
            window=opts.drift_window,
            threshold=opts.drift_threshold,
            min_images=opts.drift_min_images,
            publish=publish,
        )

    def observe_drift(self, model: LoadedModel, image, output: dict) -> None:
        monitor = self.drift.get(model.name)
        if monitor is not None and monitor.reference is model.reference:
            monitor.observe(image_signals(image, output))

    def _swapped(self, name: str, old: LoadedModel, new: LoadedModel) -> None:
        self.drift[name] = self._drift_monitor(new)  # a new reference: a new window
        self.metrics.reloads.labels(name, "ok").inc()
        self.metrics.set_model(name, new.model_id, previous=old.model_id)

    def is_ready(self) -> bool:
        return self.ready and all(worker.alive for worker in self.workers.values())


def create_app(options: ServeOptions, server: Server | None = None) -> FastAPI:
    """The API over ``server`` (a new :class:`Server` when None), started when the app starts
    (uvicorn's lifespan) unless it already is, stopped when the app stops."""
    server = server or Server(options)

    @asynccontextmanager
    async def lifespan(_app):
        if not server.ready:
            await run_in_threadpool(server.start)
        try:
            yield
        finally:
            await run_in_threadpool(server.stop)

    app = FastAPI(title="detflow serve", lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return _error(server, exc.status, exc.kind, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _bad_query(_request, exc: RequestValidationError):
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return _error(server, 422, "bad_query", detail)

    @app.exception_handler(Exception)
    async def _internal(_request, exc: Exception):  # a bug, never the client's input
        log.error("internal error: %s", exc, exc_info=exc)
        return _error(server, 500, "internal", f"{type(exc).__name__}: the server failed")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if server.is_ready():
            return {"status": "ready", "models": sorted(server.workers)}
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics")
    async def metrics():
        for name, worker in server.workers.items():
            server.metrics.queue_depth.labels(name).set(worker.queue.qsize())
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/model")
    async def model_card():
        return {
            "models": {
                name: {
                    "model_id": worker.model.model_id,
                    "path": str(worker.model.path),
                    "share": server.router.shares.get(name, 0.0),
                    "shadow": name in server.router.shadows,
                    "class_names": worker.model.detector.class_names,
                    "card": worker.model.card,
                }
                for name, worker in server.workers.items()
            }
        }

    @app.post("/v1/detect")
    async def detect(
        request: Request,
        score_threshold: float | None = Query(None, ge=0.0, le=1.0),
        max_detections: int | None = Query(None, ge=1, le=10000),
        classes: str | None = Query(None, max_length=2000, description="comma-separated names"),
        annotated: bool = False,
    ):
        return await handle_detect(
            server,
            request,
            score_threshold=score_threshold,
            max_detections=max_detections,
            classes=classes,
            annotated=annotated,
        )

    return app


def _error(server: Server, status: int, kind: str, detail: str) -> JSONResponse:
    server.metrics.requests.labels("none", str(status)).inc()
    server.metrics.errors.labels(kind).inc()
    return JSONResponse({"error": kind, "detail": detail}, status_code=status)


def run(options: ServeOptions, *, on_ready=None) -> None:
    """Load the models (DetflowError, before listening, when one cannot be), then serve until
    SIGINT/SIGTERM (uvicorn, one process: the workers are threads)."""
    import uvicorn

    cap_malloc_arenas()  # before any thread starts: flat RSS under load (serve/malloc.py)
    server = Server(options)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    if on_ready is not None:
        on_ready(server)
    uvicorn.run(
        create_app(options, server),
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
