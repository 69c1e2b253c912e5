"""What every ONNX Runtime caller shares (``detflow predict``, ``detflow serve``): the execution
providers, opening a deploy model (ONNX, or OpenVINO IR run by OpenVINO), the model's input
from an RGB array, thresholding and the JSON form of detections. NumPy, ONNX Runtime and
OpenVINO only: no torch, no OpenCV.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from detflow.core.errors import ConfigError, require_choice
from detflow.deploy.detectors import OPENVINO_SUFFIX, load_detector
from detflow.deploy.onnx_detector import OnnxDetector, detect_sliced, rgb_to_input

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def providers_for(name: str) -> list[str]:
    """ORT execution providers for ``cpu`` | ``cuda`` | ``tensorrt`` (each falls back to the
    next); raises ConfigError when this onnxruntime build lacks the first one."""
    require_choice("provider", name, PROVIDERS)
    wanted = PROVIDERS[name][0]
    available = ort.get_available_providers()
    if wanted not in available:
        raise ConfigError(
            f"provider={name}: {wanted} is not in this onnxruntime build (available: "
            f"{', '.join(available)}); install onnxruntime-gpu for cuda/tensorrt or use cpu"
        )
    return PROVIDERS[name]


def model_file(path: str | Path) -> Path:
    """``path`` itself, or for a folder (``models/deploy``) the ``model.xml`` (OpenVINO IR)
    it holds, else its ``model.onnx``."""
    path = Path(path)
    if not path.is_dir():
        return path
    ir = path / f"model{OPENVINO_SUFFIX}"
    return ir if ir.exists() else path / "model.onnx"


def open_model(path: str | Path, *, provider: str = "cpu", threads: int = 0) -> OnnxDetector:
    """The detector at ``path``: an ONNX file, an OpenVINO IR (``.xml``, run by OpenVINO on
    the CPU: ``provider`` must be cpu) or a folder holding either (``models/deploy``).
    Raises DetflowError for a missing or non-detflow model."""
    path = model_file(path)
    if path.suffix == OPENVINO_SUFFIX:
        if provider != "cpu":
            raise ConfigError(f"provider={provider}: {path} is an OpenVINO model; use cpu")
        return load_detector(path, threads=threads)
    return OnnxDetector(path, providers=providers_for(provider), threads=threads)


def model_threshold(detector: OnnxDetector, score_threshold: float | None) -> float:
    """``score_threshold`` checked (0..1), or the model's own (what evaluate scores)."""
    if score_threshold is None:
        return float(detector.metadata["detflow_score_threshold"])
    if not 0 <= score_threshold <= 1:
        raise ConfigError(f"score_threshold={score_threshold!r} must be in 0..1")
    return float(score_threshold)


def image_input(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB → the model's ``[3, H, W]`` float32 input in 0..1 (the
    ``detflow_input`` metadata; the same values as the training stack's tensors)."""
    return rgb_to_input(image)


def run_rgb(detector: OnnxDetector, image: np.ndarray) -> dict:
    """``detector`` on one ``[H, W, 3]`` uint8 RGB image: tile by tile when the model has
    tiles (the image is never converted whole to float: memory bounded by a chunk of
    tiles), else on its whole input."""
    if getattr(detector, "tiles", None) is not None:
        return detect_sliced(detector, image)
    return detector(image_input(image))


def detect(detector: OnnxDetector, image: np.ndarray, threshold: float) -> tuple[dict, float]:
    """Run ``detector`` on one ``[H, W, 3]`` uint8 RGB image; keep scores >= ``threshold``.
    Returns numpy ``boxes`` (xyxy px of ``image``), ``labels`` (1..C), ``scores`` and the
    latency in ms."""
    start = time.perf_counter()
    output = run_rgb(detector, image)
    latency_ms = (time.perf_counter() - start) * 1000
    return _above(output, threshold), latency_ms


def detect_batch(
    detector: OnnxDetector, images: list[np.ndarray], thresholds: list[float]
) -> tuple[list[dict], float]:
    """:func:`detect` for several ``[H, W, 3]`` uint8 RGB images (sizes may differ) in one
    run (``detector.detect_batch``; a model with tiles: image by image, sliced); image
    ``i`` keeps scores >= ``thresholds[i]``. Returns the outputs, each exactly what
    :func:`detect` gives, and the run's latency in ms."""
    start = time.perf_counter()
    if getattr(detector, "tiles", None) is not None:  # each image's tiles are its batch
        outputs = [detect_sliced(detector, image) for image in images]
    else:
        outputs = detector.detect_batch([image_input(image) for image in images])
    latency_ms = (time.perf_counter() - start) * 1000
    kept = [_above(out, threshold) for out, threshold in zip(outputs, thresholds, strict=True)]
    return kept, latency_ms


def _above(output: dict, threshold: float) -> dict:
    """``output``'s detections with scores >= ``threshold``, as numpy arrays."""
    output = {key: np.asarray(value) for key, value in output.items()}
    keep = output["scores"] >= threshold
    return {key: value[keep] for key, value in output.items()}


def detection_list(output: dict, class_names: list[str]) -> list[dict]:
    """Detections as JSON: ``box`` (xyxy px, 3 decimals), ``class``, ``class_id`` (1..C),
    ``score``; highest score first (stable)."""
    order = np.argsort(-output["scores"], kind="stable")
    return [
        {
            "box": [round(float(v), 3) for v in output["boxes"][i]],
            "class": class_names[int(output["labels"][i]) - 1],
            "class_id": int(output["labels"][i]),
            "score": round(float(output["scores"][i]), 6),
        }
        for i in order
    ]
