"""optimize: ONNX Runtime variants of the exported model, benchmarked side by side.

Variants (each an ``.onnx`` file): ``ort_fp32`` (graph optimisation level ALL, saved) and
``int8_static`` (QDQ static quantization calibrated on val images; only Conv/MatMul/Gemm are
quantized, so box decoding and NMS stay in float).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from detflow.errors import ConfigError, DetflowError, require_choice
from detflow.files import atomic_file
from detflow.metrics import evaluate_predictor
from detflow.runtime import OnnxDetector, make_session

VARIANTS = ("ort_fp32", "int8_static")
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]


class _ImageReader(CalibrationDataReader):
    """Feeds ``[3, H, W]`` float32 images to ORT's calibrator."""

    def __init__(self, input_name: str, images: list[np.ndarray]):
        self._items = iter([{input_name: im} for im in images])

    def get_next(self):
        return next(self._items, None)


def build_ort_fp32(source: Path, target: Path) -> None:
    """Save ORT's fully optimised graph (level ALL) for this machine's CPU provider."""
    with atomic_file(target) as tmp:
        make_session(source, optimization="all", save_optimized=tmp)


def build_int8_static(
    source: Path,
    target: Path,
    *,
    calibration: list[np.ndarray],
    per_channel: bool,
    reduce_range: bool,
) -> None:
    """QDQ INT8 static quantization, MinMax-calibrated on ``calibration`` images."""
    if not calibration:
        raise ConfigError("optimize.calibration_images must be > 0 and the val split non-empty")
    input_name = make_session(source).get_inputs()[0].name
    with tempfile.TemporaryDirectory() as work, atomic_file(target) as tmp:
        prepared = Path(work) / "prepared.onnx"
        # ONNX shape inference only: ORT's symbolic pass cannot complete on detector graphs
        quant_pre_process(
            str(source), str(prepared), skip_optimization=True, skip_symbolic_shape=True
        )
        quantize_static(
            str(prepared),
            str(tmp),
            _ImageReader(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )


def build_variants(
    *,
    onnx_path: str | Path,
    out_dir: str | Path,
    variants: list[str],
    calibration: list[np.ndarray],
    per_channel: bool = False,
    reduce_range: bool = False,
) -> dict[str, Path]:
    """Build each named variant into ``out_dir/<name>.onnx``; returns name → path."""
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.exists():
        raise DetflowError(f"{onnx_path}: exported model not found; run the export stage first")
    out_dir.mkdir(parents=True, exist_ok=True)
    built = {}
    for name in variants:
        require_choice("optimize.variants", name, VARIANTS)
        target = out_dir / f"{name}.onnx"
        if name == "ort_fp32":
            build_ort_fp32(onnx_path, target)
        else:
            build_int8_static(
                onnx_path,
                target,
                calibration=calibration,
                per_channel=per_channel,
                reduce_range=reduce_range,
            )
        built[name] = target
    return built


def benchmark(*, models: dict[str, Path], dataset, warmup_runs: int = 2) -> dict[str, dict]:
    """Size, COCO mAP and batch-1 latency of each model on ``dataset`` (same images, one run)."""
    if len(dataset) == 0:
        raise DetflowError("optimize: the test split is empty; nothing to benchmark on")
    table = {}
    for name, path in models.items():
        detector = OnnxDetector(path)
        first = dataset[0][0].numpy()
        for _ in range(warmup_runs):
            detector(first)
        metrics = evaluate_predictor(lambda image, d=detector: d(image.numpy()), dataset)
        table[name] = {
            "size_mb": round(Path(path).stat().st_size / 1e6, 3),
            "map50_95": metrics["map50_95"],
            "map50": metrics["map50"],
            "latency_ms_p50": metrics["latency_ms_p50"],
            "latency_ms_p95": metrics["latency_ms_p95"],
            "provider": detector.provider,
        }
    return table


def markdown_table(table: dict[str, dict]) -> str:
    """The benchmark as a markdown table, one row per variant."""
    rows = [
        "| variant | size MB | mAP50-95 | mAP50 | p50 ms | p95 ms | provider |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in table.items():
        rows.append(
            f"| {name} | {r['size_mb']:.1f} | {r['map50_95']:.3f} | {r['map50']:.3f} "
            f"| {r['latency_ms_p50']:.1f} | {r['latency_ms_p95']:.1f} | {r['provider']} |"
        )
    return "\n".join(rows)
