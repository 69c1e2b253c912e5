"""optimize: variants of the exported model, each a file under the output folder.

- ``ort_fp32``: ORT's fully optimised graph (level ALL) for the CPU provider, saved.
- ``int8_static``: QDQ INT8, calibrated on val images
  (:func:`detflow.deploy.quantize.build_int8_static`).
- ``int8_dynamic``: INT8 weights, activations quantized at run time.
- ``fp16``: float16 convolutions and matrix products (for GPUs; run by CUDA when present,
  else by the CPU provider).
- ``openvino_fp32`` / ``openvino_bf16`` / ``openvino_int8``: OpenVINO IR (``.xml`` +
  ``.bin``), converted from the export and run in float32 / in bf16 (skipped where the CPU
  has no native bf16) / INT8 by NNCF post-training quantization on the same calibration
  images (:mod:`detflow.deploy.openvino_build`); skipped with the reason without
  ``openvino``.
- ``tensorrt_fp16`` / ``tensorrt_int8``: TensorRT engines built by ONNX Runtime's TensorRT
  execution provider (int8: from a QDQ model, TensorRT's explicit quantization). Where the
  provider, the tensorrt package or a CUDA GPU is missing they are :class:`Variant` s with
  ``skipped`` set to the reason, never silently missing.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from detflow.core.errors import ConfigError, DetflowError, require_positive
from detflow.core.faults import maybe_kill
from detflow.core.files import atomic_dir, atomic_file, write_json
from detflow.core.options import ConfigOptions
from detflow.deploy.onnx_detector import make_session
from detflow.deploy.openvino_build import build_openvino, build_openvino_int8
from detflow.deploy.openvino_detector import native_bf16, openvino_missing
from detflow.deploy.quantize import (
    CALIBRATION_METHODS,
    DEFAULT_STATIC_OPS,
    EXCLUSION_MODES,
    QUANTIZED_OPS,
    STATIC_OPS,
    build_fp16,
    build_int8_dynamic,
    build_int8_static,
)

VARIANTS = (
    *("ort_fp32", "int8_static", "int8_dynamic", "fp16", "tensorrt_fp16", "tensorrt_int8"),
    *("openvino_fp32", "openvino_bf16", "openvino_int8"),
)
WEIGHT_OP_VARIANTS = ("int8_dynamic", "fp16")  # change only the ops with weights
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


@dataclass(frozen=True, kw_only=True)
class OptimizeOptions(ConfigOptions):
    """The validated ``optimize.*`` (see conf/optimize/cpu.yaml): the variants to build, the
    accuracy budget and warm-up of the benchmark, and the INT8/fp16 settings."""

    SECTION = "optimize"

    variants: list[str] = field(
        default_factory=lambda: list(VARIANTS), metadata={"choices": VARIANTS}
    )
    max_map_drop: float = 1.0
    warmup_runs: int = 2
    latency_rounds: int = 3
    calibration_method: str = field(
        default="minmax", metadata={"choices": tuple(CALIBRATION_METHODS)}
    )
    calibration_images: int = 16
    per_channel: bool = False
    reduce_range: bool = False
    quantize_op_types: list[str] = field(
        default_factory=lambda: list(DEFAULT_STATIC_OPS), metadata={"choices": STATIC_OPS}
    )
    exclude_nodes: list[str] = field(default_factory=list)
    int8_exclusion: str = field(default="auto", metadata={"choices": EXCLUSION_MODES})
    auto_min_sqnr_db: float = 10.0

    def check(self) -> None:
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"optimize.variants={list(self.variants)} names a variant twice")
        require_positive("optimize.warmup_runs", self.warmup_runs, allow_zero=True, integer=True)
        require_positive(
            "optimize.latency_rounds", self.latency_rounds, allow_zero=True, integer=True
        )
        require_positive("optimize.calibration_images", self.calibration_images, integer=True)
        require_positive("optimize.auto_min_sqnr_db", self.auto_min_sqnr_db, allow_zero=True)
        ops = self.quantize_op_types
        if not ops:
            raise ConfigError(
                f"optimize.quantize_op_types is empty; use some of: {', '.join(STATIC_OPS)}"
            )
        if set(WEIGHT_OP_VARIANTS) & set(self.variants) and not set(QUANTIZED_OPS) & set(ops):
            raise ConfigError(
                f"optimize.quantize_op_types={list(ops)!r} has none of {', '.join(QUANTIZED_OPS)}"
            )


@dataclass(frozen=True)
class Variant:
    """One optimized model: its file and the ORT providers (names or (name, options)) it runs
    with, best first; or, with ``skipped``, the reason it was not built here."""

    name: str
    path: Path | None = None
    providers: list = field(default_factory=lambda: [CPU])
    skipped: str | None = None


def build_ort_fp32(source: Path, target: Path) -> None:
    """Save ORT's fully optimised graph (level ALL) for this machine's CPU provider."""
    with atomic_file(target) as tmp:
        make_session(source, optimization="all", save_optimized=tmp)


def tensorrt_missing() -> str | None:
    """Why ORT's TensorRT execution provider cannot run here, or None when it may."""
    available = ort.get_available_providers()
    if TENSORRT not in available:
        return (
            f"onnxruntime {ort.__version__} has no {TENSORRT} (has {', '.join(available)}); "
            "needs onnxruntime-gpu built with TensorRT, the tensorrt package and a CUDA GPU"
        )
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt package is not installed (pip install -e '.[tensorrt]')"
    return None


def tensorrt_providers(name: str, engine_dir: Path) -> list:
    """ORT providers for a TensorRT variant: engines cached in ``engine_dir``; CUDA, then
    CPU, run what TensorRT does not take (e.g. RoIAlign)."""
    options = {
        "trt_fp16_enable": True,
        "trt_int8_enable": name == "tensorrt_int8",  # explicit: the model's QDQ scales
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(engine_dir),
    }
    return [(TENSORRT, options), CUDA, CPU]


def build_tensorrt(name: str, target: Path) -> Variant:
    """Build the TensorRT engine of ``target`` (ONNX; QDQ for int8) by opening a session
    with :func:`tensorrt_providers`; a Variant with ``skipped`` when that fails."""
    engine_dir = target.with_suffix(".engines")
    engine_dir.mkdir(exist_ok=True)
    providers = tensorrt_providers(name, engine_dir)
    try:
        session = make_session(target, providers=providers)
    except DetflowError as exc:
        return Variant(name, skipped=f"TensorRT engine build failed: {exc}")
    if session.get_providers()[0] != TENSORRT:
        return Variant(name, skipped=f"ONNX Runtime fell back to {session.get_providers()[0]}")
    return Variant(name, target, providers)


def build_variants(
    *,
    onnx_path: str | Path,
    out_dir: str | Path,
    calibration: list[np.ndarray],
    options: OptimizeOptions,
) -> list[Variant]:
    """Build each of ``options.variants`` into ``out_dir/<name>.onnx``, in the order given;
    the folder is built aside and replaces ``out_dir`` whole once every variant is built.

    ``calibration``: ``[3, H, W]`` float32 val images for static INT8; the INT8 variants take
    ``options.per_channel``, ``reduce_range``, ``quantize_op_types`` and ``exclude_nodes``
    (regexes over node names kept in float; fp16 keeps them in float32 too).
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.exists():
        raise DetflowError(f"{onnx_path}: exported model not found; run the export stage first")
    int8 = {  # calibration is also openvino_int8's (NNCF)
        "calibration": calibration,
        "method": options.calibration_method,
        "per_channel": options.per_channel,
        "reduce_range": options.reduce_range,
        "op_types": options.quantize_op_types,
        "exclude_nodes": options.exclude_nodes,
        "exclusion": options.int8_exclusion,
        "min_sqnr_db": options.auto_min_sqnr_db,
        "input_name": make_session(onnx_path).get_inputs()[0].name,
    }
    built = []
    with atomic_dir(out_dir) as tmp:
        for name in options.variants:
            built.append(_build(name, onnx_path, tmp, int8))
            maybe_kill("optimize.variant")
    return [_moved(variant, out_dir) for variant in built]


def _moved(variant: Variant, out_dir: Path) -> Variant:
    """``variant`` as it is once its folder was renamed to ``out_dir``."""
    if variant.path is None:
        return variant
    path = out_dir / variant.path.name
    providers = variant.providers
    if variant.name.startswith("tensorrt"):  # the engine cache moved with the folder
        providers = tensorrt_providers(variant.name, path.with_suffix(".engines"))
    return Variant(variant.name, path, providers, variant.skipped)


def _float_nodes(source: Path, target: Path, int8: dict) -> dict:
    """Build static INT8 at ``target``; its float-node report, also kept in ``int8`` for the
    OpenVINO INT8 variant."""
    settings = {k: v for k, v in int8.items() if k != "float_nodes"}
    int8["float_nodes"] = build_int8_static(source, target, **settings)
    return int8["float_nodes"]


def _build_openvino(name: str, source: Path, out_dir: Path, int8: dict) -> Variant:
    """``openvino_fp32`` / ``openvino_bf16`` / ``openvino_int8`` as ``out_dir/<name>.xml``;
    INT8 keeps in float the nodes static INT8 keeps in float (measured once, shared with
    ``int8_static``), run in bf16 where the CPU has it natively."""
    reason = openvino_missing()
    if reason is not None:
        return Variant(name, skipped=reason)
    bf16 = native_bf16()
    if name == "openvino_bf16" and not bf16:
        return Variant(name, skipped="this CPU has no native bf16 (AMX or AVX-512 BF16)")
    target = out_dir / f"{name}.xml"
    if name in ("openvino_fp32", "openvino_bf16"):
        build_openvino(source, target, precision="bf16" if name == "openvino_bf16" else "f32")
        return Variant(name, target, providers=[])
    if "float_nodes" not in int8:
        with tempfile.TemporaryDirectory() as work:
            _float_nodes(source, Path(work) / "int8_static.onnx", int8)
    float_nodes = {*int8["float_nodes"]["float_nodes"], *_unquantized(source, int8["op_types"])}
    failed = build_openvino_int8(
        source,
        target,
        precision="bf16" if bf16 else "f32",
        calibration=int8["calibration"],
        float_nodes=sorted(float_nodes),
    )
    if failed:
        return Variant(name, skipped=failed)
    return Variant(name, target, providers=[])


def _unquantized(source: Path, op_types: list[str]) -> list[str]:
    """Names of the main graph's nodes static INT8 leaves in float whatever it measures: those
    not of ``op_types``."""
    return [n.name for n in onnx.load(str(source)).graph.node if n.op_type not in op_types]


def _build(name: str, source: Path, out_dir: Path, int8: dict) -> Variant:
    target = out_dir / f"{name}.onnx"
    nodes = {"op_types": int8["op_types"], "exclude_nodes": int8["exclude_nodes"]}
    if name == "ort_fp32":
        build_ort_fp32(source, target)
    elif name == "int8_static":  # which nodes stayed float, and why: next to the model
        write_json(out_dir / f"{name}.float_nodes.json", _float_nodes(source, target, int8))
    elif name == "int8_dynamic":
        flags = {"per_channel": int8["per_channel"], "reduce_range": int8["reduce_range"]}
        build_int8_dynamic(source, target, **flags, **nodes)
    elif name.startswith("openvino"):
        return _build_openvino(name, source, out_dir, int8)
    elif name == "fp16":
        build_fp16(source, target, **nodes)
        available = ort.get_available_providers()
        return Variant(name, target, [p for p in (CUDA, CPU) if p in available])
    else:  # tensorrt_fp16, tensorrt_int8
        reason = tensorrt_missing()
        if reason is not None:
            return Variant(name, skipped=reason)
        if name == "tensorrt_int8":  # TensorRT's explicit quantization: the QDQ scales
            _float_nodes(source, target, int8)
        else:
            shutil.copyfile(source, target)
        return build_tensorrt(name, target)
    return Variant(name, target)
