"""What a run's numbers depend on besides the code, the data and the seeds: the CPU's
instruction sets and the versions of the numeric runtimes.

Data artifacts (collect, clean, split, augment) are byte-identical across machines; weights
and metrics are reproducible only on the same instruction set, since PyTorch, ONNX Runtime and
OpenVINO choose their kernels (and so their floating-point rounding) by what the CPU offers
(docs/reliability.md). Versions come from the installed packages' metadata, so this module
imports none of them (the ONNX serving path stays free of torch).
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# /proc/cpuinfo flag -> the name reported
INSTRUCTION_SETS = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512F",
    "avx512_vnni": "AVX-512 VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}
PACKAGES = ("torch", "torchvision", "onnxruntime", "openvino", "numpy")


def machine_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """``{"cpu", "cores", "machine", "instruction_sets", "packages"}``: the CPU model name,
    the logical cores, the architecture (``platform.machine()``), the :data:`INSTRUCTION_SETS`
    its flags list (in that order; None where ``cpuinfo`` cannot be read, e.g. not on
    Linux) and the installed version of each of :data:`PACKAGES` (None when not
    installed)."""
    flags, model = _cpu_flags(Path(cpuinfo))
    return {
        "cpu": model or platform.processor() or None,
        "cores": os.cpu_count(),
        "machine": platform.machine() or None,
        "instruction_sets": None
        if flags is None
        else [name for flag, name in INSTRUCTION_SETS.items() if flag in flags],
        "packages": {name: _version(name) for name in PACKAGES},
    }


def _cpu_flags(path: Path) -> tuple[set[str] | None, str | None]:
    """The first processor's ``flags`` and ``model name`` in a /proc/cpuinfo text."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None, None
    flags, model = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and flags is None:
            flags = set(value.split())
        elif key == "model name" and model is None:
            model = value.strip()
    return flags, model


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
