"""OpenVINO variants of the exported model (build time: needs ``openvino``, and ``nncf`` for
INT8, which imports torch when it is installed; the runtime path,
:mod:`detflow.deploy.openvino_detector`, needs ``openvino`` only).

- ``openvino_fp32``: the ONNX graph converted to OpenVINO IR, weights kept in float32 and
  run in float32 (recorded in the IR: OpenVINO's default on CPUs with AMX or AVX-512 BF16 is
  bf16, which is ``openvino_bf16``).
- ``openvino_bf16``: the same IR, run in bf16 (only where the CPU has it natively).
- ``openvino_int8``: the same IR quantized by NNCF post-training quantization (8-bit weights
  and activations of the convolutions and matrix products, bias correction), calibrated on
  the same val images as ORT's static INT8, and quantizing the same nodes: those of
  ``optimize.quantize_op_types`` less the ones static INT8 keeps in float
  (``optimize.int8_exclusion``, measured by ``auto``). The ops left in float run in bf16
  where the CPU has it natively (OpenVINO's default there), else in float32. With NNCF's
  own choice (it also quantizes e.g. the box decoding's Sub/Div) the Faster R-CNN model lost
  18.8 mAP50-95 points.
  NNCF runs in a child process
  (:func:`build_openvino_int8`): on some graphs OpenVINO crashes while NNCF collects
  statistics (seen with a random-weight 64-px Faster R-CNN, openvino 2026.4.1 / nncf 3.4.0),
  and a crash must become a skipped variant with its reason, not a dead optimize stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import signal
import tempfile
from pathlib import Path

import numpy as np
import onnx

from detflow.core.errors import ConfigError
from detflow.deploy.openvino_detector import METADATA_RT_KEY, PRECISION_KEY, PRECISIONS

# what the IR was built from, in the .xml: a retrained model with the same graph gets a new
# .xml digest (serve's reload and the model card compare the .xml's)
BUILD_KEY = "detflow_build_sha256"


def _build_digest(source: Path, calibration: list[np.ndarray] | None) -> str:
    digest = hashlib.sha256(Path(source).read_bytes())
    for image in calibration or []:
        digest.update(repr(image.shape).encode())
        digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def detflow_metadata(path: Path) -> dict[str, str]:
    """The ONNX model's ``detflow_*`` metadata properties, as stored (strings)."""
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props if p.key.startswith("detflow_")}


def build_openvino(
    source: Path,
    target: Path,
    *,
    precision: str,
    calibration: list[np.ndarray] | None = None,
    float_nodes: list[str] = (),
) -> None:
    """Convert ``source`` (ONNX) to OpenVINO IR at ``target`` (``.xml``, weights in the
    ``.bin`` beside it) whose float ops run in ``precision`` (f32 | bf16, recorded in the
    IR); with ``calibration`` (``[3, H, W]`` float32 val images) quantize it to INT8 with
    NNCF first, keeping ``float_nodes`` (ONNX node names, which OpenVINO keeps as operation
    names; a Conv/Gemm's weight op is ``<name>/WithoutBiases``) in float."""
    import openvino as ov

    if precision not in PRECISIONS:
        raise ConfigError(f"OpenVINO precision {precision!r} is not one of {PRECISIONS}")

    model = ov.convert_model(str(source))
    if calibration is not None:
        if not calibration:
            raise ConfigError("optimize.calibration_images must be > 0 and the val split non-empty")
        # nncf imports torch's cpp_extension, which warns that this CPU machine has no CUDA
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        import nncf

        nncf.set_log_level(logging.WARNING)  # not its ~300 INFO lines per model (dvc repro)
        names = [*float_nodes, *(f"{name}/WithoutBiases" for name in float_nodes)]
        ignored = nncf.IgnoredScope(names=names, validate=False)  # folded nodes: nothing to keep
        model = nncf.quantize(
            model, nncf.Dataset(calibration), subset_size=len(calibration), ignored_scope=ignored
        )
    meta = {**detflow_metadata(source), BUILD_KEY: _build_digest(source, calibration)}
    meta[PRECISION_KEY] = precision
    model.set_rt_info(json.dumps(meta, sort_keys=True), [METADATA_RT_KEY])
    ov.save_model(model, str(target), compress_to_fp16=False)


def build_openvino_int8(
    source: Path,
    target: Path,
    *,
    precision: str,
    calibration: list[np.ndarray],
    float_nodes: list[str] = (),
) -> str | None:
    """:func:`build_openvino` with ``calibration`` and ``float_nodes`` in a child process;
    returns None when built, else why not (the child's exit status or signal)."""
    if not calibration:
        raise ConfigError("optimize.calibration_images must be > 0 and the val split non-empty")
    with tempfile.TemporaryDirectory() as work:
        images = Path(work) / "calibration.npz"
        np.savez(images, *calibration)
        child = multiprocessing.get_context("spawn").Process(
            target=_build_from_file,
            args=(str(source), str(target), str(images), list(float_nodes), precision),
        )
        child.start()
        child.join()
    if child.exitcode == 0:
        return None
    if child.exitcode < 0:
        return (
            "NNCF post-training quantization crashed on this model "
            f"(signal {signal.Signals(-child.exitcode).name})"
        )
    return f"NNCF post-training quantization failed (exit status {child.exitcode}; see the log)"


def _build_from_file(
    source: str, target: str, images: str, float_nodes: list[str], precision: str
) -> None:
    with np.load(images) as arrays:
        calibration = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    build_openvino(
        Path(source),
        Path(target),
        precision=precision,
        calibration=calibration,
        float_nodes=float_nodes,
    )
