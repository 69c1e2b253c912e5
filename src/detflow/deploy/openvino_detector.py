"""OpenVINO inference for detflow models converted to OpenVINO IR (``model.xml`` +
``model.bin``): the same interface and outputs as :class:`detflow.deploy.onnx_detector.
OnnxDetector`, so ``detflow predict``, ``detflow serve`` and the optimize benchmark run either.

The IR is the exported ONNX graph converted by OpenVINO (FP32) or quantized by NNCF (INT8);
it takes one ``[3, H, W]`` float32 image in 0..1 and returns ``boxes`` (``[N, 4]`` xyxy
pixels of the input), ``labels`` (``[N]`` int64, 1..C) and ``scores`` (``[N]`` float32).
The ONNX model's ``detflow_*`` metadata travels in the IR's runtime info
(:data:`METADATA_RT_KEY`, one JSON object), with the precision the optimize stage measured
it at (:data:`PRECISION_KEY`): OpenVINO's CPU plugin otherwise runs float ops in bf16 on CPUs
with AMX or AVX-512 BF16, so an "FP32" IR would not run in FP32 there.
:meth:`OpenVinoDetector.detect_batch` runs the images on parallel inference streams
(OpenVINO's throughput mode). Imports no torch: a deploy machine needs the
``openvino`` package only (``pip install -e '.[openvino]'``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from detflow.core.errors import DetflowError
from detflow.deploy.onnx_detector import (
    METADATA_KEYS,
    OUTPUTS,
    detect_sliced,
    finish_outputs,
    input_to_rgb,
    read_settings,
)

METADATA_RT_KEY = "detflow_metadata"
PRECISION_KEY = "detflow_inference_precision"  # f32 | bf16: what float ops run in
PRECISIONS = ("f32", "bf16")
DEVICE = "CPU"


def openvino_missing() -> str | None:
    """Why OpenVINO cannot run here, or None when it can."""
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"the openvino package is not installed ({exc}); pip install -e '.[openvino]'"
    return None


def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (AMX or AVX-512 BF16)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")


class OpenVinoDetector:
    """Callable detector over an OpenVINO IR: ``detector(image)`` → numpy outputs (as
    :class:`OnnxDetector`, including the model's post-processing and dropping label 0, and
    sliced inference for a model with tiles)."""

    def __init__(
        self, path: str | Path, *, threads: int = 0, postprocess: bool = True, sliced: bool = True
    ):
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
                "optimize stage (optimize.variants: openvino_fp32 | openvino_bf16 | openvino_int8)"
            ) from exc
        missing = [k for k in METADATA_KEYS if k not in meta]
        if missing:
            raise DetflowError(f"{self.path}: not a detflow model (metadata {missing} missing)")
        self.precision = _precision(self.path, meta.get(PRECISION_KEY))
        self._core, self._model = core, model
        self._config = {"INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1}
        if self.precision is not None:
            self._config["INFERENCE_PRECISION_HINT"] = self.precision
        self.compiled = core.compile_model(model, DEVICE, {**self._config, **LATENCY})
        read_settings(self, meta, postprocess=postprocess, sliced=sliced)
        self._request = self.compiled.create_infer_request()
        self._streams = None  # detect_batch's, compiled on its first call

    @property
    def provider(self) -> str:
        """``OpenVINO CPU``, with the float precision when the IR records it."""
        name = f"OpenVINO {DEVICE}"
        return name if self.precision is None else f"{name} {self.precision}"

    def __call__(self, image) -> dict:
        """``image``: ``[3, H, W]`` float32 in 0..1 (numpy); sliced when the model has tiles
        (:func:`~detflow.deploy.onnx_detector.detect_sliced`: the tiles on the streams of
        :meth:`detect_batch`)."""
        if self.tiles is not None:
            return detect_sliced(self, input_to_rgb(image))
        array = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
        results = self._request.infer([array])
        named = {out.get_any_name(): value for out, value in results.items()}
        return finish_outputs(self, *(named[name] for name in OUTPUTS))

    def detect_batch(self, images: list) -> list[dict]:
        """One output per ``[3, H_i, W_i]`` float32 image (sizes may differ), the images run
        on OpenVINO's parallel inference streams (throughput mode: each stream on part of the
        cores; on 2 cores one image leaves them partly idle). Each output is the detections
        ``detector(image)`` gives (same graph and precision; only the thread count per
        image differs). OpenVINO 2026.4 cannot convert the batched graph's ``Loop``
        (:mod:`detflow.deploy.batch_graph`), hence streams rather than one call."""
        import openvino as ov

        if self._streams is None:
            compiled = self._core.compile_model(self._model, DEVICE, {**self._config, **THROUGHPUT})
            jobs = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
            self._streams = ov.AsyncInferQueue(compiled, jobs)
            self._streams.set_callback(_keep_outputs)
        raw: dict[int, tuple] = {}
        for index, image in enumerate(images):
            array = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
            self._streams.start_async([array], (raw, index))
        self._streams.wait_all()
        return [finish_outputs(self, *raw[index]) for index in range(len(images))]


LATENCY = {"PERFORMANCE_HINT": "LATENCY"}
THROUGHPUT = {"PERFORMANCE_HINT": "THROUGHPUT"}


def _keep_outputs(request, userdata) -> None:
    """AsyncInferQueue callback: copy a finished request's ``boxes``/``labels``/``scores``
    into ``userdata = (raw, index)`` (the request's tensors are reused by the next image)."""
    raw, index = userdata
    named = {out.get_any_name(): out for out in request.model_outputs}
    raw[index] = tuple(request.get_tensor(named[name]).data.copy() for name in OUTPUTS)


def _precision(path: Path, recorded: str | None) -> str | None:
    """The IR's recorded float precision (None for IRs built before it was recorded: the
    plugin's default); bf16 on a CPU without it runs in f32 (never less precise)."""
    if recorded is None:
        return None
    if recorded not in PRECISIONS:
        raise DetflowError(
            f"{path}: {PRECISION_KEY}={recorded!r} is not one of {', '.join(PRECISIONS)}; "
            "rebuild it with the optimize stage"
        )
    return recorded if recorded == "f32" or native_bf16() else "f32"
