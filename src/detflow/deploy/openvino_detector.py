"""OpenVINO inference for detflow models converted to OpenVINO IR (``model.xml`` +
``model.bin``): the same interface and outputs as :class:`detflow.deploy.onnx_detector.
OnnxDetector`, so ``detflow predict``, ``detflow serve`` and the optimize benchmark run either.

The IR is the exported ONNX graph converted by OpenVINO (FP32) or quantized by NNCF (INT8);
it takes one ``[3, H, W]`` float32 image in 0..1 and returns ``boxes`` (``[N, 4]`` xyxy
pixels of the input), ``labels`` (``[N]`` int64, 1..C) and ``scores`` (``[N]`` float32).
The ONNX model's ``detflow_*`` metadata travels in the IR's runtime info
(:data:`METADATA_RT_KEY`, one JSON object). Imports no torch: a deploy machine needs the
``openvino`` package only (``pip install -e '.[openvino]'``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from detflow.core.errors import DetflowError
from detflow.deploy.onnx_detector import METADATA_KEYS, OUTPUTS, finish_outputs, read_settings

METADATA_RT_KEY = "detflow_metadata"
DEVICE = "CPU"


def openvino_missing() -> str | None:
    """Why OpenVINO cannot run here, or None when it can."""
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"the openvino package is not installed ({exc}); pip install -e '.[openvino]'"
    return None


class OpenVinoDetector:
    """Callable detector over an OpenVINO IR: ``detector(image)`` → numpy outputs (as
    :class:`OnnxDetector`, including the model's post-processing and dropping label 0)."""

    def __init__(self, path: str | Path, *, threads: int = 0, postprocess: bool = True):
        self.path = Path(path)
        if not self.path.exists():
            raise DetflowError(f"{self.path}: model not found; run the optimize stage first")
        reason = openvino_missing()
        if reason is not None:
            raise DetflowError(f"{self.path}: {reason}")
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
            meta = json.loads(model.get_rt_info([METADATA_RT_KEY]).astype(str))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own exception types
            raise DetflowError(
                f"{self.path}: not a detflow OpenVINO model ({exc}); build it with the "
                "optimize stage (optimize.variants: openvino_fp32 | openvino_int8)"
            ) from exc
        missing = [k for k in METADATA_KEYS if k not in meta]
        if missing:
            raise DetflowError(f"{self.path}: not a detflow model (metadata {missing} missing)")
        config = {
            "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1,
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = core.compile_model(model, DEVICE, config)
        read_settings(self, meta, postprocess=postprocess)
        self._request = self.compiled.create_infer_request()

    @property
    def provider(self) -> str:
        return f"OpenVINO {DEVICE}"

    def __call__(self, image) -> dict:
        """``image``: ``[3, H, W]`` float32 in 0..1 (numpy)."""
        array = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
        results = self._request.infer([array])
        named = {out.get_any_name(): value for out, value in results.items()}
        return finish_outputs(self, *(named[name] for name in OUTPUTS))

    def detect_batch(self, images: list) -> list[dict]:
        """One output per ``[3, H_i, W_i]`` image, one inference after another: OpenVINO
        2026.4 cannot convert the batched graph's ``Loop`` (:mod:`detflow.deploy.batch_graph`)."""
        return [self(image) for image in images]
