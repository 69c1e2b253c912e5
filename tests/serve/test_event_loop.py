"""The event loop stays free: a real server on 127.0.0.1 (uvicorn in a thread of this
process) whose decode, drift signals, request-log write or ``annotated=true`` drawing is
made slow answers ``/healthz`` at once while that request is still being handled."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from detflow.deploy.reference import build_reference
from detflow.serve import app as serve_app
from detflow.serve import detect_request, monitoring, upload
from detflow.serve.options import load_options

from serve_helpers import free_port

SLOW_S = 2.0
# (owner, attribute) made slow: each runs once per detect request
SLOW_POINTS = {
    "decode": (upload, "decode_rgb"),
    "drift": (serve_app, "image_signals"),
    "request_log": (monitoring.RequestLog, "write"),
    "annotate": (detect_request, "draw_boxes"),
}


@contextmanager
def running(options):
    """``detflow serve``'s app under uvicorn on a free loopback port; yields its URL once
    ``/readyz`` answers 200 (at most 60 s)."""
    port = free_port()
    config = uvicorn.Config(
        serve_app.create_app(options), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("server not ready within 60 s")
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def model_with_reference(served_model, tmp_path):
    """The served model in a folder with a ``reference.json``, so drift is measured."""
    model, folder = served_model
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copy(model, deploy / "model.onnx")
    signals = [
        {"width": 64.0, "height": 64.0, "brightness": 100.0 + i, "detections": 1.0}
        | {"score": [0.5], "labels": [1]}
        for i in range(10)
    ]
    (deploy / "reference.json").write_text(json.dumps(build_reference(signals, ["a", "b"])))
    return deploy / "model.onnx", folder


@pytest.mark.parametrize("point", list(SLOW_POINTS))
def test_a_slow_step_of_a_request_does_not_delay_healthz(
    model_with_reference, monkeypatch, tmp_path, point
):
    model, folder = model_with_reference
    owner, name = SLOW_POINTS[point]
    real, entered = getattr(owner, name), threading.Event()

    def slow(*args, **kwargs):
        entered.set()
        time.sleep(SLOW_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, slow)
    options = load_options(models=[{"path": str(model)}], request_log=str(tmp_path / "r.jsonl"))
    with running(options) as url, ThreadPoolExecutor(1) as pool:
        request = pool.submit(
            httpx.post,
            f"{url}/v1/detect",
            params={"annotated": "true"},
            content=(folder / "img0.png").read_bytes(),
            headers={"content-type": "image/png"},
            timeout=60,
        )
        assert entered.wait(60), f"{point} was never reached"
        begin = time.perf_counter()
        health = httpx.get(f"{url}/healthz", timeout=SLOW_S * 3)
        waited = time.perf_counter() - begin
        assert health.status_code == 200 and not request.done()
        assert waited < SLOW_S / 2, f"/healthz waited {waited:.2f} s on a slow {point}"
        answer = request.result(timeout=60)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1
