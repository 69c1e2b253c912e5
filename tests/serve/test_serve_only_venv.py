"""`detflow serve` from `pip install -c constraints.txt ".[serve]"` in a fresh venv (no
``--system-site-packages``): the install resolves without torch, OpenCV, DVC or Hydra, and
the server answers detect requests from that venv with both deploy formats optimize can
pick: an OpenVINO IR (``model.xml``, the default ``openvino_int8``'s format) answers, an
ONNX model runs as its shadow on the same requests.

The venv is cached per hash of ``constraints.txt`` and ``pyproject.toml`` under
``$DETFLOW_CACHE`` (default ``~/.cache/detflow``): a first build takes about a minute (pip
downloads and installs ~30 packages), later runs re-run the same ``pip install`` (which
re-resolves the extra against what the venv holds and re-installs detflow from this checkout;
about 6 s). A dependency change changes the hash, so the resolution is redone from scratch.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serve_helpers import free_port

REPO = Path(__file__).resolve().parents[2]
ABSENT = ("torch", "torchvision", "cv2", "dvc", "hydra", "albumentations")


def serve_venv() -> Path:
    """The python of a venv holding ``.[serve]`` of this checkout (built or refreshed)."""
    digest = hashlib.sha256()
    for name in ("constraints.txt", "pyproject.toml"):
        digest.update((REPO / name).read_bytes())
    cache = Path(os.environ.get("DETFLOW_CACHE", Path.home() / ".cache" / "detflow"))
    venv = cache / f"serve-venv-{digest.hexdigest()[:12]}"
    if not venv.exists():
        building = venv.with_name(venv.name + f".tmp{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
        pip_install(building / "bin" / "python")
        os.replace(building, venv)  # the test runs `python -m`: the moved scripts go unused
    else:
        pip_install(venv / "bin" / "python")
    return venv / "bin" / "python"


def pip_install(python: Path) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + ["-c", str(REPO / "constraints.txt"), f"{REPO}[serve]"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_serve_extra_installs_no_torch_and_serves(served_model, tmp_path):
    from detflow.deploy.openvino_build import build_openvino

    model, folder = served_model
    build_openvino(model, tmp_path / "ir" / "model.xml", precision="f32")
    config = tmp_path / "serve.yaml"
    config.write_text(
        f"serve:\n  models:\n    - {{name: ir, path: {tmp_path / 'ir'}}}\n"
        f"    - {{name: onnx, path: {model}, shadow: true}}\n"
    )
    python = str(serve_venv())
    probe = f"import importlib.util as u; print([m for m in {ABSENT} if u.find_spec(m)])"
    found = subprocess.run(
        [python, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert found.stdout.strip() == "[]"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    torch_command = subprocess.run(
        [python, "-m", "detflow.cli", "weights"], capture_output=True, text=True, env=env
    )
    assert torch_command.returncode == 2
    assert "'pipeline' extra" in torch_command.stderr and "Traceback" not in torch_command.stderr
    port = free_port()
    process = subprocess.Popen(
        [python, "-m", "detflow.cli", "serve", "--config", str(config), "--port", str(port)]
        + ["--request-log", str(tmp_path / "log.jsonl")],
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
        assert response.json()["model_name"] == "ir"  # answered by OpenVINO
        card = httpx.get(f"{url}/v1/model").json()["models"]
        assert card["ir"]["path"].endswith("model.xml") and card["onnx"]["shadow"]
        assert "detflow_requests_total" in httpx.get(f"{url}/metrics").text
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    # uvicorn shuts down gracefully, then re-raises SIGTERM: -15 is the normal end
    assert process.returncode in (0, -15) and "Traceback" not in output, output[-2000:]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {(r["model"], r["shadow"]) for r in log} == {("ir", False), ("onnx", True)}
