"""deploy: the fastest variant within the accuracy budget, copied with its model card.

``<out_dir>/model.onnx`` is the variant's file byte for byte; ``<out_dir>/model_card.json``
holds the variant, its benchmark row (metrics, latency, throughput, provider, status), the
class names, input spec, normalisation and post-processing from the model's metadata, the
file's SHA-256, the source commit, the model's cost (params, FLOPs per image) and the machine
that measured the row (instruction sets and runtime versions:
:func:`detflow.core.machine.machine_info`). Both are written together (one atomic
directory).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import onnx

from detflow.core.files import atomic_dir, sha256_file, write_json


def source_commit(repo: str | Path = ".") -> str | None:
    """``git rev-parse HEAD`` of ``repo``; None without git or outside a repository."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def model_metadata(path: str | Path) -> dict:
    """The model's ``detflow_*`` metadata properties, JSON values decoded."""
    proto = onnx.load(str(path), load_external_data=False)
    return model_metadata_from({prop.key: prop.value for prop in proto.metadata_props})


def deploy(
    *,
    variant: str,
    model_path: str | Path,
    row: dict,
    out_dir: str | Path,
    commit: str | None,
    cost: dict | None = None,
    machine: dict | None = None,
) -> dict:
    """Copy ``model_path`` to ``out_dir/model.onnx`` (an OpenVINO IR: ``model.xml`` and
    ``model.bin``) and write the model card; returns it. ``cost``: the PyTorch model's
    parameter count and FLOPs per image (evaluate's ``cost``), in the card when given;
    ``machine``: :func:`~detflow.core.machine.machine_info` of the machine that benchmarked
    the row, in the card when given."""
    model_path = Path(model_path)
    openvino = model_path.suffix == ".xml"
    meta = _openvino_metadata(model_path) if openvino else model_metadata(model_path)
    card = {
        "variant": variant,
        **row,
        "class_names": meta.get("class_names"),
        "input": meta.get("input"),
        "normalize": meta.get("normalize"),
        "postprocess": meta.get("postprocess"),
        "config_sha256": meta.get("config_sha256"),
        "model_sha256": sha256_file(model_path),
        "source_commit": commit,
    }
    if cost is not None:
        card["cost"] = cost
    if machine is not None:
        card["machine"] = machine
    if openvino:
        card["weights_sha256"] = sha256_file(model_path.with_suffix(".bin"))
    with atomic_dir(out_dir) as tmp:
        if openvino:
            shutil.copyfile(model_path, tmp / "model.xml")
            shutil.copyfile(model_path.with_suffix(".bin"), tmp / "model.bin")
        else:
            shutil.copyfile(model_path, tmp / "model.onnx")
        write_json(tmp / "model_card.json", card)
    return card


def _openvino_metadata(path: Path) -> dict:
    """:func:`model_metadata` of an OpenVINO IR built by the optimize stage."""
    from detflow.deploy.openvino_detector import OpenVinoDetector

    raw = OpenVinoDetector(path, postprocess=False).metadata
    return model_metadata_from(raw)


def model_metadata_from(props: dict[str, str]) -> dict:
    """``detflow_*`` properties (strings) → keys without the prefix, JSON values decoded."""
    meta = {}
    for key, value in props.items():
        if key.startswith("detflow_"):
            try:
                meta[key.removeprefix("detflow_")] = json.loads(value)
            except json.JSONDecodeError:
                meta[key.removeprefix("detflow_")] = value
    return meta
