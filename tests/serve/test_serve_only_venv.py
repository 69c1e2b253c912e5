"""`detflow serve` in a venv holding only the serving dependencies (no torch, OpenCV, DVC or
Hydra). Skipped unless DETFLOW_SERVE_PYTHON names that venv's python, made with:

    python -m venv /tmp/serve-venv
    /tmp/serve-venv/bin/pip install -c constraints.txt numpy pillow pyyaml onnxruntime \\
        fastapi uvicorn prometheus-client python-multipart httpx
    /tmp/serve-venv/bin/pip install --no-deps .
    DETFLOW_SERVE_PYTHON=/tmp/serve-venv/bin/python pytest tests/serve/test_serve_only_venv.py
"""

import os
import subprocess
import time

import httpx
import pytest

from serve_helpers import free_port

PYTHON = os.environ.get("DETFLOW_SERVE_PYTHON")


@pytest.mark.skipif(not PYTHON, reason="set DETFLOW_SERVE_PYTHON to a serving-only venv")
def test_serve_runs_where_torch_is_not_installed(served_model, tmp_path):
    model, folder = served_model
    missing = subprocess.run(
        [
            PYTHON,
            "-c",
            "import importlib.util as u; print([m for m in "
            "('torch', 'torchvision', 'cv2', 'dvc', 'hydra') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert missing.stdout.strip() == "[]"
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    process = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "detflow.cli",
            "serve",
            "--model",
            str(model),
            "--port",
            str(port),
            "--request-log",
            str(tmp_path / "log.jsonl"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        response = httpx.post(
            f"{url}/v1/detect",
            content=(folder / "img0.png").read_bytes(),
            headers={"content-type": "image/png"},
            timeout=60,
        )
        assert response.status_code == 200 and response.json()["detections"]
        assert "detflow_requests_total" in httpx.get(f"{url}/metrics").text
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    # uvicorn shuts down gracefully, then re-raises SIGTERM: -15 is the normal end
    assert process.returncode in (0, -15) and "Traceback" not in output, output[-2000:]
