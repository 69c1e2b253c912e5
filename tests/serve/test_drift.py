"""Drift: reference distributions from the deployed model on a test split (as the optimize
stage writes them), PSI per signal, and a real server that reports drift on /metrics and
warns when a signal crosses serve.drift_threshold."""

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from detflow.deploy.onnx_detector import OnnxDetector
from detflow.deploy.reference import build_reference, psi, shares, write_reference
from detflow.serve.drift import DriftMonitor


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    base = [
        {
            "width": 1.0,
            "height": 1.0,
            "brightness": float(v),
            "detections": 1.0,
            "score": [0.5],
            "labels": [1],
        }
        for v in rng.normal(100, 10, 2000)
    ]
    reference = build_reference(base, ["a"])
    bins = reference["signals"]["brightness"]
    same = shares(rng.normal(100, 10, 2000), bins["edges"])
    shifted = shares(rng.normal(130, 10, 2000), bins["edges"])
    assert psi(bins["shares"], same) < 0.05 < 1.0 < psi(bins["shares"], shifted)
    published = {}
    monitor = DriftMonitor(
        "m",
        reference,
        ["a"],
        window=100,
        threshold=0.25,
        min_images=50,
        every=10,
        publish=published.__setitem__,
    )
    for item in base[:100]:
        monitor.observe(item)
    assert published["brightness"] < 0.25
    for value in rng.normal(160, 5, 100):
        monitor.observe({**base[0], "brightness": float(value)})
    assert published["brightness"] > 1.0 and published["classes"] == pytest.approx(0, abs=1e-6)


def _signals(width: float, height: float) -> dict:
    return {
        "width": width,
        "height": height,
        "brightness": 90.0,
        "detections": 1.0,
        "score": [0.5],
        "labels": [1],
    }


def _window_psi(reference: dict, signals: list[dict]) -> dict:
    published, size = {}, len(signals)
    monitor = DriftMonitor(
        "m",
        reference,
        ["a"],
        window=size,
        threshold=0.25,
        min_images=size,
        every=size,
        publish=published.__setitem__,
    )
    for item in signals:
        monitor.observe(item)
    return published


def test_larger_images_than_a_constant_size_move_psi_the_same_size_does_not():
    """The bundled images are all 416 x 416: a reference bin open at the top held 640 x 640
    too (PSI 0); closed bins put it in a bin the reference leaves empty."""
    reference = build_reference([_signals(416.0, 416.0)] * 34, ["a"])
    assert reference["signals"]["width"]["edges"] == pytest.approx([395.2, 436.8])
    same = _window_psi(reference, [_signals(416.0, 416.0)] * 50)
    assert same["width"] == pytest.approx(0, abs=1e-9) and same["height"] == same["width"]
    larger = _window_psi(reference, [_signals(640.0, 480.0)] * 50)
    assert larger["width"] > 0.2 and larger["height"] > 0.2 and larger["brightness"] == 0
    a_few = _window_psi(reference, [_signals(640.0, 416.0)] * 5 + [_signals(416.0, 416.0)] * 45)
    assert 0.2 < a_few["width"] < larger["width"] and a_few["height"] == 0  # 10 % larger


def test_larger_images_than_a_varied_reference_move_psi():
    rng = np.random.default_rng(0)
    sizes = rng.integers(300, 501, 200).astype(float)  # a test split of varied sizes
    reference = build_reference([_signals(w, w) for w in sizes], ["a"])
    edges = reference["signals"]["width"]["edges"]
    assert edges[0] < sizes.min() and edges[-1] > sizes.max()  # closed on both sides
    assert reference["signals"]["width"]["shares"][-1] == 0  # nothing of it above the top
    like = _window_psi(reference, [_signals(w, w) for w in rng.integers(300, 501, 200)])
    assert like["width"] < 0.25
    larger = _window_psi(reference, [_signals(w, w) for w in rng.integers(900, 1200, 200)])
    assert larger["width"] > 0.2 and larger["width"] > 10 * like["width"]


def test_served_model_reports_drift_on_brightness(served_model, serve, tmp_path):
    model, folder = served_model
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copy(model, deploy / "model.onnx")
    rng = np.random.default_rng(3)
    dark = []
    for index in range(20):  # the "test split": dark noise images, each its own level
        path = tmp_path / f"dark{index}.png"
        Image.fromarray(rng.integers(0, 20 + 3 * index, (64, 64, 3), dtype=np.uint8)).save(path)
        dark.append(path)
    reference = write_reference(
        detector=OnnxDetector(deploy / "model.onnx"),
        image_paths=dark,
        out_path=deploy / "reference.json",
    )
    assert reference["images"] == 20 and set(reference["signals"]) >= {"width", "brightness"}
    config = tmp_path / "serve.yaml"
    config.write_text(
        f"serve:\n  models: [{{name: deploy, path: {deploy}}}]\n"
        "  drift_window: 20\n  drift_min_images: 10\n  drift_threshold: 2.0\n"
    )
    server = serve(["--config", str(config)])

    def send(low, high, count):
        for index in range(count):
            buffer = io.BytesIO()
            top = high + 3 * index if high < 100 else high
            Image.fromarray(rng.integers(low, top, (64, 64, 3), dtype=np.uint8)).save(
                buffer, format="PNG"
            )
            response = server.client.post(
                "/v1/detect", content=buffer.getvalue(), headers={"content-type": "image/png"}
            )
            assert response.status_code == 200

    def psi_of(signal):
        for line in server.client.get("/metrics").text.splitlines():
            if line.startswith(f'detflow_drift_psi{{model="deploy",signal="{signal}"}}'):
                return float(line.rsplit(" ", 1)[1])
        return None

    send(0, 20, 20)  # like the reference
    assert psi_of("brightness") < 2.0 and psi_of("width") < 2.0
    send(180, 256, 20)  # bright images: the brightness signal drifts
    assert psi_of("brightness") > 2.0 and psi_of("width") < 2.0
    code, output = server.stop()
    assert code == 0 and "drift on brightness" in output and "drift on width" not in output
