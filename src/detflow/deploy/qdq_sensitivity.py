"""Which nodes of a static-INT8 model break accuracy: measured, not guessed.

ONNX Runtime's ``qdq_loss_debug`` runs the float model and its fully quantized QDQ copy on
the calibration images (the val split) with every intermediate tensor as an output, and
compares each quantized node's output across the two models. The comparison is the
signal-to-quantization-noise ratio, ``SQNR = 20 log10(‖float‖ / ‖float − int8‖)`` in dB,
averaged over the images where the tensor has the same shape in both models (proposal and
detection counts may differ). A node whose output is below ``min_sqnr_db`` stays in float
(``optimize.int8_exclusion: auto``). On the Faster R-CNN defaults these are the box
decoding and rescaling arithmetic and the RoI box head, where uint8 steps of a pixel or more
cost mAP at high IoU, while the backbone stays in INT8 (docs/benchmarks.md).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import qdq_loss_debug

SQNR_CAP_DB = 100.0  # identical tensors (no noise): reported as this
ORT_ERRORS_ONLY = 3  # ORT's log severity: 0 verbose, 1 info, 2 warning, 3 error

CHUNK = 4  # images whose intermediate outputs are held at once (memory: ~0.65 GB each)


def quiet_session_options() -> ort.SessionOptions:
    """Options for ORT sessions on the temporary graphs of the measurement: no graph
    optimization (the tensors as the models compute them, qdq_loss_debug's default) and errors
    only in the log. The QDQ graph keeps the bounds of the Clips its quantizer folded away;
    ORT warned once per unused bound ("Removing initializer ...", 70 lines per optimize run of
    FCOS), about a temporary file nobody can act on."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = ORT_ERRORS_ONLY
    return options


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """``20 log10(‖reference‖ / ‖reference − other‖)``, capped at :data:`SQNR_CAP_DB`."""
    noise = float(np.linalg.norm(reference.astype(np.float64) - other))
    signal = float(np.linalg.norm(reference.astype(np.float64)))
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return 0.0
    return min(SQNR_CAP_DB, 20.0 * math.log10(signal / noise))


def node_sqnr(
    *, float_model: Path, qdq_model: Path, reader, op_types: list[str]
) -> dict[str, float]:
    """Node name → mean SQNR (dB) of its output, float vs QDQ model, over the images of
    ``reader`` (a CalibrationDataReader with ``set_range``); only nodes of ``op_types`` whose
    output the QDQ model quantized. The images go :data:`CHUNK` at a time: each chunk's
    intermediate outputs are compared and dropped (every output of 32 images of FCOS at 416 px,
    both models, held ~21 GB at once and was killed for memory on a 24 GB machine); the mean
    is over the same per-image values in the same order as over all images at once."""
    producer = {out: node for node in onnx.load(str(float_model)).graph.node for out in node.output}
    values: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as work:
        augmented = [Path(work) / "float.onnx", Path(work) / "qdq.onnx"]
        for path, out in zip((float_model, qdq_model), augmented, strict=True):
            qdq_loss_debug.modify_model_output_intermediate_tensors(
                str(path), str(out), op_types_for_saving=list(op_types)
            )
        for start in range(0, len(reader), CHUNK):
            activations = []
            for path in augmented:
                reader.set_range(start, min(start + CHUNK, len(reader)))
                activations.append(
                    qdq_loss_debug.collect_activations(
                        str(path), reader, session_options=quiet_session_options()
                    )
                )
            _add_sqnr(values, activations, producer, op_types)
    return {name: round(float(np.mean(v)), 3) for name, v in values.items() if v}


def _add_sqnr(values: dict, activations: list, producer: dict, op_types) -> None:
    """Append each quantized node's per-image SQNR of one chunk to ``values``."""
    matching = qdq_loss_debug.create_activation_matching(activations[1], activations[0])
    for tensor, pair in matching.items():
        node = producer.get(tensor)
        if node is None or node.op_type not in op_types or "float" not in pair:
            continue
        values.setdefault(node.name, []).extend(
            sqnr_db(f, q)
            for f, q in zip(pair["float"], pair["post_qdq"], strict=False)
            if f.shape == q.shape
        )


def sensitive_nodes(sqnr: dict[str, float], *, min_sqnr_db: float) -> list[str]:
    """The nodes of ``sqnr`` (from :func:`node_sqnr`) below ``min_sqnr_db``, worst first."""
    return sorted((n for n, v in sqnr.items() if v < min_sqnr_db), key=lambda n: (sqnr[n], n))
