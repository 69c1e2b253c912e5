"""Reduced-precision copies of an exported detector: INT8 (static QDQ, dynamic) and FP16.

Only the op types named (by default ``Conv``, ``MatMul``, ``Gemm``: the backbone, FPN, RPN and
box-head weights) change precision; RoIAlign, NMS, box decoding and the pre-processing stay in
float32. ``exclude_nodes`` are regular expressions (full match) over node names that are kept
in float too, e.g. ``/roi_heads/box_predictor/.*`` for the final class and box layers.
"""

from __future__ import annotations

import logging
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from detflow.core.errors import ConfigError
from detflow.core.files import atomic_file
from detflow.deploy.qdq_sensitivity import node_sqnr, sensitive_nodes

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")  # ops with weights: dynamic INT8 and fp16 change these
# Static INT8 may also quantize the activations flowing between them, so that consecutive ops
# stay in INT8 instead of a DequantizeLinear/QuantizeLinear pair around each Conv (measured on
# Faster R-CNN, then the default: 1.25x ort_fp32 and -2.2 mAP50-95 points vs 1.05x and -2.4
# with QUANTIZED_OPS only; docs/benchmarks.md).
STATIC_OPS = (
    *QUANTIZED_OPS,
    *("Add", "Mul", "Relu", "Clip", "Sigmoid", "Concat", "Resize", "MaxPool"),
    *("Transpose", "Reshape"),
)
# The default: all but Mul. ONNX Runtime 1.32 ends the process with a segmentation fault on
# the Faster R-CNN model once its Mul nodes are quantized (each op type added alone to
# QUANTIZED_OPS and probed with detflow.deploy.crash_probe: only Mul crashed; benchmarks.md).
DEFAULT_STATIC_OPS = tuple(op for op in STATIC_OPS if op != "Mul")
CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class _ImageReader(CalibrationDataReader):
    """Feeds ``[3, H, W]`` float32 images to ORT's calibrator, one range at a time: images
    differ in size, and ORT's histogram calibrators (entropy, percentile) can only merge
    same-shaped tensors within one ``collect_data`` call (see ``CalibStridedMinMax``)."""

    def __init__(self, input_name: str, images: list[np.ndarray]):
        self._feeds = [{input_name: im} for im in images]
        self._items = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._items = iter(self._feeds[start_index:end_index])

    def get_next(self):
        return next(self._items, None)


def weight_op_types(op_types: list[str]) -> list[str]:
    """The ops with weights (:data:`QUANTIZED_OPS`) among ``op_types``, which dynamic INT8 and
    fp16 change (``optimize.*`` options make sure there is one)."""
    return [op for op in op_types if op in QUANTIZED_OPS]


def excluded_nodes(model: onnx.ModelProto, patterns: list[str]) -> list[str]:
    """Names of the main graph's nodes that fully match one of ``patterns`` (regexes);
    ConfigError names a pattern that matches no node (a typo would otherwise pass silently)."""
    names = [node.name for node in model.graph.node]
    found = []
    for pattern in patterns:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"optimize.exclude_nodes: {pattern!r} is no regex ({exc})") from exc
        matched = [n for n in names if regex.fullmatch(n)]
        if not matched:
            raise ConfigError(f"optimize.exclude_nodes: {pattern!r} matches no node of the model")
        found += [n for n in matched if n not in found]
    return found


def _prepared(source: Path, work: str) -> Path:
    prepared = Path(work) / "prepared.onnx"
    # ONNX shape inference only: ORT's symbolic pass cannot complete on detector graphs
    quant_pre_process(str(source), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
    return prepared


EXCLUSION_MODES = ("auto", "manual")


def build_int8_static(
    source: Path,
    target: Path,
    *,
    input_name: str,
    calibration: list[np.ndarray],
    method: str = "minmax",
    per_channel: bool = False,
    reduce_range: bool = False,
    op_types: list[str] = DEFAULT_STATIC_OPS,
    exclude_nodes: list[str] = (),
    exclusion: str = "manual",
    min_sqnr_db: float = 10.0,
) -> dict:
    """QDQ INT8 static quantization (activations uint8, weights int8), calibrated with
    ``method`` (minmax | entropy | percentile) on ``calibration`` ``[3, H, W]`` images.

    ``exclusion``: ``manual`` keeps the nodes matching ``exclude_nodes`` in float; ``auto``
    also quantizes everything else once, measures each node's output against the float model
    on the calibration images (:func:`detflow.deploy.qdq_sensitivity.node_sqnr`) and keeps
    those below ``min_sqnr_db`` in float. Returns ``{"float_nodes": [...], "sqnr_db":
    {node: dB}}`` (empty ``sqnr_db`` for manual)."""
    if not calibration:
        raise ConfigError("optimize.calibration_images must be > 0 and the val split non-empty")
    if exclusion not in EXCLUSION_MODES:
        raise ConfigError(f"optimize.int8_exclusion={exclusion!r}; use one of {EXCLUSION_MODES}")
    settings = {
        "reader": _ImageReader(input_name, calibration),
        "method": method,
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "op_types": list(op_types),
    }
    with tempfile.TemporaryDirectory() as work, atomic_file(target) as tmp:
        prepared = _prepared(source, work)
        kept = excluded_nodes(onnx.load(str(prepared)), list(exclude_nodes))
        sqnr = {}
        if exclusion == "auto":
            full = Path(work) / "full_int8.onnx"
            _quantize_static(prepared, full, kept, **settings)
            sqnr = node_sqnr(
                float_model=prepared,
                qdq_model=full,
                reader=settings["reader"],
                op_types=settings["op_types"],
            )
            kept += [n for n in sensitive_nodes(sqnr, min_sqnr_db=min_sqnr_db) if n not in kept]
        _quantize_static(prepared, Path(tmp), kept, **settings)
    return {"float_nodes": kept, "sqnr_db": sqnr}


def _quantize_static(
    prepared: Path,
    target: Path,
    exclude: list[str],
    *,
    reader,
    method,
    per_channel,
    reduce_range,
    op_types,
) -> None:
    reader.set_range(0, len(reader))
    with quiet_quantizer_info():
        quantize_static(
            str(prepared),
            str(target),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            nodes_to_exclude=exclude,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CALIBRATION_METHODS[method],
            extra_options={"CalibStridedMinMax": 1},  # one image per collect_data call
        )


class _BelowWarningFrom(logging.Filter):
    def __init__(self, path_part: str):
        super().__init__()
        self.path_part = path_part

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or self.path_part not in record.pathname


@contextmanager
def quiet_quantizer_info():
    """Drop ORT's quantizer INFO records ("Created a copy of bias input ...", one per shared
    bias: 42 lines per optimize run of the tiny FCOS) while it runs: it logs them on the root
    logger, which the stages show from INFO on. Its warnings still pass."""
    root = logging.getLogger()
    quiet = _BelowWarningFrom(str(Path("onnxruntime", "quantization")))
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def build_int8_dynamic(
    source: Path,
    target: Path,
    *,
    per_channel: bool = False,
    reduce_range: bool = False,
    op_types: list[str] = QUANTIZED_OPS,
    exclude_nodes: list[str] = (),
) -> None:
    """Dynamic INT8 quantization: int8 weights, activations quantized at run time (no
    calibration) of the ops with weights among ``op_types``."""
    op_types = weight_op_types(op_types)
    with tempfile.TemporaryDirectory() as work, atomic_file(target) as tmp:
        prepared = _prepared(source, work)
        quantize_dynamic(
            str(prepared),
            str(tmp),
            op_types_to_quantize=op_types,
            nodes_to_exclude=excluded_nodes(onnx.load(str(prepared)), list(exclude_nodes)),
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
        )


def build_fp16(
    source: Path,
    target: Path,
    *,
    op_types: list[str] = QUANTIZED_OPS,
    exclude_nodes: list[str] = (),
) -> None:
    """FP16 copy for GPUs: the main graph's nodes of the ``op_types`` with weights
    (:func:`weight_op_types`) compute in float16 (their float weights stored as float16, Casts
    around them); everything else, the inputs and the outputs stay float32. See
    :func:`to_float16`."""
    op_types = weight_op_types(op_types)
    model = onnx.load(str(source))
    model = to_float16(model, op_types=op_types, keep=excluded_nodes(model, list(exclude_nodes)))
    onnx.checker.check_model(model)
    with atomic_file(target) as tmp:
        onnx.save(model, str(tmp))


def to_float16(model: onnx.ModelProto, *, op_types, keep=()) -> onnx.ModelProto:
    """A copy of ``model`` where main-graph nodes of ``op_types`` (not named in ``keep``) run
    in float16: float32 initializer inputs become float16 initializers, other inputs get a
    Cast to float16 and each output a Cast back to float32, so the graph stays topologically
    sorted and its interface unchanged. (onnxruntime's ``convert_float_to_float16`` breaks the
    ``If`` subgraphs of torchvision detectors; this conversion leaves subgraphs alone.)"""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    half: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        if node.op_type not in op_types or node.name in keep:
            nodes.append(node)
            continue
        for k, name in enumerate(node.input):
            if not name:
                continue
            if name in inits and inits[name].data_type == TensorProto.FLOAT:
                if name not in half:
                    half[name] = f"{name}__fp16"
                    array = numpy_helper.to_array(inits[name]).astype(np.float16)
                    graph.initializer.append(numpy_helper.from_array(array, half[name]))
                node.input[k] = half[name]
            elif name not in inits:
                cast = f"{node.name or node.output[0]}__in{k}_fp16"
                nodes.append(helper.make_node("Cast", [name], [cast], to=TensorProto.FLOAT16))
                node.input[k] = cast
        outputs = list(node.output)
        for k, name in enumerate(outputs):
            node.output[k] = f"{name}__fp16"
        nodes.append(node)
        for name in outputs:
            nodes.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    used = _inputs_used(graph)
    kept = [t for t in graph.initializer if t.name in used or t.name not in half]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def _inputs_used(graph: onnx.GraphProto) -> set[str]:
    """Every name a node of ``graph`` or of its subgraphs reads."""
    used = set()
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                used |= _inputs_used(sub)
    return used


def calibration_images(dataset, count: int) -> list[np.ndarray]:
    """The first ``count`` images of ``dataset`` (a DetectionDataset: the train split) as
    ``[3, H, W]`` float32 arrays, for static INT8 calibration."""
    return [dataset[i][0].numpy() for i in range(min(count, len(dataset)))]
