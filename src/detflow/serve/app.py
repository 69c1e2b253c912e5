"""The HTTP API (FastAPI): ``POST /v1/detect``, ``GET /v1/model``, ``/healthz``, ``/readyz``,
``/metrics``.

``/v1/detect`` takes one image as the raw body (``image/*`` or ``application/octet-stream``)
or as a multipart upload (field ``image`` or ``file``) and answers the detections as
``detflow predict`` writes them (``box`` xyxy pixels of the uploaded image, ``class``,
``class_id``, ``score``; highest score first), with the model id and latencies;
``?annotated=true`` answers the image with the boxes drawn (PNG). Bad input gets a 4xx JSON
``{"error": kind, "detail": "..."}``; nothing a client sends ends a worker.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from detflow.core.draw import draw_boxes
from detflow.core.errors import DataError
from detflow.core.images import PixelLimitError, decode_rgb
from detflow.deploy.reference import image_signals
from detflow.deploy.runtime import detection_list
from detflow.serve.batching import BatchWorker, LoadedModel, QueueFull, load_model
from detflow.serve.drift import DriftMonitor
from detflow.serve.malloc import cap_malloc_arenas
from detflow.serve.monitoring import Metrics, RequestLog
from detflow.serve.options import ServeOptions
from detflow.serve.reload import ModelWatcher
from detflow.serve.routing import Router

log = logging.getLogger(__name__)
RAW_TYPES = ("image/", "application/octet-stream")
RETRY_AFTER_S = 1


class ApiError(Exception):
    """A client error: HTTP ``status``, ``kind`` (metric label and ``error``), ``detail``."""

    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


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
        return await _detect(server, request, score_threshold, max_detections, classes, annotated)

    return app


async def _detect(server: Server, request, score_threshold, max_detections, classes, annotated):
    start = time.perf_counter()
    options = server.options
    if not server.is_ready():
        raise ApiError(503, "not_ready", "the models are still loading")
    name = server.router.choose(request.headers.get(options.client_header))
    worker = server.workers[name]
    wanted = _classes(classes, worker.model.detector.class_names)
    data = await _read_image_bytes(request, int(options.max_upload_mb * 1024 * 1024))
    image = await run_in_threadpool(_decode, data, options.max_pixels)
    try:
        future = worker.submit(image, score_threshold)
    except QueueFull as exc:
        server.metrics.requests.labels(name, "503").inc()
        server.metrics.errors.labels("queue_full").inc()
        return JSONResponse(
            {"error": "queue_full", "detail": f"{exc}; retry after {RETRY_AFTER_S} s"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    output, latency_ms, model, batch_size = await asyncio.wrap_future(future)
    server.observe_drift(model, image, output)
    request_id = uuid.uuid4().hex
    for shadow in server.router.shadows:
        _mirror(server, shadow, image, score_threshold, request_id)
    output = _select(output, wanted, max_detections)
    detections = detection_list(output, model.detector.class_names)
    total_ms = (time.perf_counter() - start) * 1000
    _record(server, model, output, latency_ms, total_ms, request_id, request, shadow=False)
    if annotated:
        names = dict(enumerate(model.detector.class_names, start=1))
        drawn = draw_boxes(
            image,
            boxes=output["boxes"],
            labels=output["labels"],
            names=names,
            scores=output["scores"],
        )
        buffer = io.BytesIO()
        Image.fromarray(drawn).save(buffer, format="PNG")
        headers = {"X-Model-Id": model.model_id, "X-Detections": str(len(detections))}
        return Response(buffer.getvalue(), media_type="image/png", headers=headers)
    height, width = image.shape[:2]
    # rendered here: FastAPI's generic encoder of a returned dict took about 7 ms per answer
    # of 100 detections, in the event loop (profiled); these values are JSON-native already
    return JSONResponse(
        {
            "model": model.model_id,
            "model_name": model.name,
            "request_id": request_id,
            "width": width,
            "height": height,
            "detections": detections,
            "latency_ms": round(latency_ms, 3),
            "batch_size": batch_size,
            "total_ms": round(total_ms, 3),
        }
    )


def _classes(text: str | None, class_names: list[str]) -> set[int] | None:
    if text is None:
        return None
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in wanted if part not in class_names]
    if unknown or not wanted:
        raise ApiError(
            422, "bad_query", f"classes: unknown {unknown or [text]}; known: {class_names}"
        )
    return {class_names.index(part) + 1 for part in wanted}


def _select(output: dict, wanted: set[int] | None, max_detections: int | None) -> dict:
    keep = np.ones(len(output["scores"]), bool)
    if wanted is not None:
        keep &= np.isin(output["labels"], list(wanted))
    output = {key: value[keep] for key, value in output.items()}
    if max_detections is not None and len(output["scores"]) > max_detections:
        top = np.argsort(-output["scores"], kind="stable")[:max_detections]
        output = {key: value[np.sort(top)] for key, value in output.items()}
    return output


async def _read_image_bytes(request: Request, limit: int) -> bytes:
    """The image's bytes from a raw body or a multipart upload, at most ``limit`` bytes."""
    content_type = request.headers.get("content-type", "").lower()
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith(RAW_TYPES):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type {content_type or 'missing'!r}: send the image as image/* or "
            "application/octet-stream, or as a multipart/form-data field 'image'",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise ApiError(413, "upload_too_large", f"{declared} bytes; the limit is {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit + (64 * 1024 if multipart else 0):
            raise ApiError(413, "upload_too_large", f"over the limit of {limit} bytes")
    if not multipart:
        return _check_size(bytes(body), limit)
    return _check_size(await _multipart_file(request, bytes(body)), limit)


async def _multipart_file(request: Request, body: bytes) -> bytes:
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form(max_files=1, max_fields=20)
    except Exception as exc:  # noqa: BLE001 - starlette raises several kinds here
        raise ApiError(400, "bad_multipart", f"multipart body cannot be parsed ({exc})") from exc
    try:
        upload = form.get("image") or form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "no_image", "multipart upload without a file field 'image'")
        return await upload.read()
    finally:
        await form.close()


def _check_size(data: bytes, limit: int) -> bytes:
    if len(data) > limit:
        raise ApiError(413, "upload_too_large", f"{len(data)} bytes; the limit is {limit} bytes")
    if not data:
        raise ApiError(400, "empty_body", "zero bytes received; send an image")
    return data


def _decode(data: bytes, max_pixels: int) -> np.ndarray:
    try:
        return np.asarray(decode_rgb(data, name="upload", max_pixels=max_pixels))
    except PixelLimitError as exc:
        raise ApiError(413, "too_many_pixels", str(exc)) from exc
    except DataError as exc:
        raise ApiError(400, "not_an_image", str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the upload's fault
        raise ApiError(400, "not_an_image", f"upload: image cannot be decoded ({exc})") from exc


def _mirror(server: Server, name: str, image, threshold, request_id: str) -> None:
    """Queue ``image`` on the shadow model; its result goes to metrics and the log only."""
    try:
        future = server.workers[name].submit(image, threshold)
    except QueueFull:
        server.metrics.shadow_dropped.labels(name).inc()
        return

    def done(result):
        if result.exception() is None:
            output, latency_ms, model, _ = result.result()
            server.observe_drift(model, image, output)
            _record(server, model, output, latency_ms, None, request_id, None, shadow=True)

    future.add_done_callback(done)


def _record(server, model, output, latency_ms, total_ms, request_id, request, *, shadow):
    metrics = server.metrics
    metrics.inference.labels(model.name).observe(latency_ms / 1000)
    metrics.observe_detections(model.name, output, model.detector.class_names)
    if not shadow:
        metrics.requests.labels(model.name, "200").inc()
        metrics.latency.labels(model.name).observe(total_ms / 1000)
    scores = output["scores"]
    names = model.detector.class_names
    server.request_log.write(
        request_id=request_id,
        model=model.name,
        model_id=model.model_id,
        shadow=shadow,
        client=None if request is None else request.headers.get(server.options.client_header),
        latency_ms=round(latency_ms, 3),
        detections=int(len(scores)),
        mean_score=round(float(np.mean(scores)), 6) if len(scores) else None,
        classes=sorted(names[int(label) - 1] for label in output["labels"]),
    )


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
