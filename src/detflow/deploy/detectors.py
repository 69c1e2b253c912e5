"""Open a deploy model by its file: ``.xml`` (OpenVINO IR) → :class:`OpenVinoDetector`,
anything else (ONNX) → :class:`OnnxDetector`. Both are callables with the same outputs,
``class_names``, ``metadata``, ``path`` and ``provider``. No torch."""

from __future__ import annotations

from pathlib import Path

from detflow.deploy.onnx_detector import OnnxDetector
from detflow.deploy.openvino_detector import OpenVinoDetector

OPENVINO_SUFFIX = ".xml"


def load_detector(path: str | Path, *, providers: list | None = None, threads: int = 0):
    """The detector for ``path``; ``providers`` (ORT execution providers) apply to ONNX."""
    path = Path(path)
    if path.suffix == OPENVINO_SUFFIX:
        return OpenVinoDetector(path, threads=threads)
    return OnnxDetector(path, providers=providers, threads=threads)


def model_bytes(path: str | Path) -> int:
    """Size of the model on disk: the file, plus the weights ``.bin`` of an OpenVINO IR."""
    path = Path(path)
    size = path.stat().st_size
    if path.suffix == OPENVINO_SUFFIX and path.with_suffix(".bin").exists():
        size += path.with_suffix(".bin").stat().st_size
    return size
