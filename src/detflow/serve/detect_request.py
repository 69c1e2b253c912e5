"""One ``POST /v1/detect`` request, from the upload to the answer.

The event loop only routes, queues and awaits: decoding, the drift signals, the metrics and
request-log record and the ``annotated=true`` drawing and PNG encode run in the thread pool
(inference runs in the model's worker thread), so a slow request never delays another
request or ``/healthz``. The answer's ``box`` is xyxy pixels of the uploaded image.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from detflow.core.draw import draw_boxes
from detflow.deploy.runtime import detection_list
from detflow.serve.batching import QueueFull
from detflow.serve.upload import ApiError, read_image

RETRY_AFTER_S = 1


async def handle_detect(
    server,
    request: Request,
    *,
    score_threshold: float | None,
    max_detections: int | None,
    classes: str | None,
    annotated: bool,
) -> Response:
    """Answer one detect request on ``server`` (:class:`detflow.serve.app.Server`): JSON
    detections, or the image with its boxes drawn as PNG (``annotated``)."""
    start = time.perf_counter()
    options = server.options
    if not server.is_ready():
        raise ApiError(503, "not_ready", "the models are still loading")
    name = server.router.choose(request.headers.get(options.client_header))
    worker = server.workers[name]
    wanted = _classes(classes, worker.model.detector.class_names)
    max_bytes = int(options.max_upload_mb * 1024 * 1024)
    image = await read_image(request, max_bytes=max_bytes, max_pixels=options.max_pixels)
    try:
        future = worker.submit(image, score_threshold)
    except QueueFull as exc:
        return _queue_full(server, name, exc)
    output, latency_ms, model, batch_size = await asyncio.wrap_future(future)
    request_id = uuid.uuid4().hex
    for shadow in server.router.shadows:
        _mirror(server, shadow, image, score_threshold, request_id)
    selected = select(output, wanted, max_detections)
    detections = detection_list(selected, model.detector.class_names)
    total_ms = (time.perf_counter() - start) * 1000
    client = request.headers.get(options.client_header)
    await run_in_threadpool(
        _observe, server, model, image, output, selected, latency_ms, total_ms, request_id, client
    )
    if annotated:
        png = await run_in_threadpool(annotated_png, image, selected, model.detector.class_names)
        headers = {"X-Model-Id": model.model_id, "X-Detections": str(len(detections))}
        return Response(png, media_type="image/png", headers=headers)
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


def _queue_full(server, name: str, exc: QueueFull) -> JSONResponse:
    server.metrics.requests.labels(name, "503").inc()
    server.metrics.errors.labels("queue_full").inc()
    return JSONResponse(
        {"error": "queue_full", "detail": f"{exc}; retry after {RETRY_AFTER_S} s"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
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


def select(output: dict, wanted: set[int] | None, max_detections: int | None) -> dict:
    """The detections of ``output`` whose label is ``wanted`` (all when None), the
    ``max_detections`` highest-scoring of them, in their order."""
    keep = np.ones(len(output["scores"]), bool)
    if wanted is not None:
        keep &= np.isin(output["labels"], list(wanted))
    output = {key: value[keep] for key, value in output.items()}
    if max_detections is not None and len(output["scores"]) > max_detections:
        top = np.argsort(-output["scores"], kind="stable")[:max_detections]
        output = {key: value[np.sort(top)] for key, value in output.items()}
    return output


def annotated_png(image: np.ndarray, output: dict, class_names: list[str]) -> bytes:
    """``image`` (``[H, W, 3]`` uint8 RGB) with the xyxy pixel boxes of ``output`` drawn and
    captioned, as PNG bytes."""
    drawn = draw_boxes(
        image,
        boxes=output["boxes"],
        labels=output["labels"],
        names=dict(enumerate(class_names, start=1)),
        scores=output["scores"],
    )
    buffer = io.BytesIO()
    Image.fromarray(drawn).save(buffer, format="PNG")
    return buffer.getvalue()


def _observe(server, model, image, output, selected, latency_ms, total_ms, request_id, client):
    """In the thread pool: the drift signals of the image (all its detections) and the record
    of the answer (the selected ones)."""
    server.observe_drift(model, image, output)
    _record(server, model, selected, latency_ms, total_ms, request_id, client, shadow=False)


def _mirror(server, name: str, image, threshold, request_id: str) -> None:
    """Queue ``image`` on the shadow model; its result goes to metrics and the log only (in
    the shadow's worker thread)."""
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


def _record(server, model, output, latency_ms, total_ms, request_id, client, *, shadow):
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
        client=client,
        latency_ms=round(latency_ms, 3),
        detections=int(len(scores)),
        mean_score=round(float(np.mean(scores)), 6) if len(scores) else None,
        classes=sorted(names[int(label) - 1] for label in output["labels"]),
    )
