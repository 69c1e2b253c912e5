"""Helpers for the HTTP server tests (tests/serve/; the fixtures ``served_model`` and ``serve``
in tests/conftest.py use them): one tiny real exported model, a few images, and a real
``detflow serve`` process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from detflow.data.torch_dataset import image_to_tensor
from detflow.deploy.export import export_verified
from detflow.model.build import build_model

from export_helpers import TINY_EXPORT

# the server process: torch must never be imported by `detflow serve`
SERVE_SCRIPT = (
    "import sys; from detflow.cli import main; code = main(sys.argv[1:]); "
    "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)"
)


def export_served_model(work: Path) -> tuple[Path, Path]:
    """(model.onnx, images folder) under ``work``: an untrained 2-class Faster R-CNN at 96 px
    (real ImageNet features, so detections follow the pixels) and four noise images."""
    folder = work / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index, (h, w) in enumerate(((96, 128), (80, 60), (64, 64), (120, 90))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            folder / f"img{index}.png"
        )
    torch.manual_seed(0)
    model = build_model(
        name="fasterrcnn_mobilenet_v2",
        num_classes=2,
        backbone_weights="IMAGENET1K_V1",
        min_size=96,
        max_size=96,
        score_threshold=0.0,
        max_detections=100,
        test_proposals=25,  # a fast model for the 2,000-request tests; detections stay many
    ).eval()
    names = sorted(p.name for p in folder.iterdir())
    images = [image_to_tensor(Image.open(folder / name).convert("RGB")) for name in names]
    export_verified(
        model=model, onnx_path=work / "model.onnx", images=images, **{**TINY_EXPORT, "names": names}
    )
    return work / "model.onnx", folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """``detflow serve`` in a subprocess on 127.0.0.1; ``client`` talks HTTP to it."""

    def __init__(self, args: list[str], *, cwd: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE_SCRIPT, "serve", "--port", str(self.port), *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.client = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.process.stdout.read()[-3000:]}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("server not ready within 120 s")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> tuple[int, str]:
        """SIGINT (as Ctrl-C); the exit code and the output."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode, self.process.stdout.read()
