"""export: the trained detector → ONNX with pre- and post-processing in the graph, gated by
a parity check of ONNX Runtime against PyTorch on real images.

Box errors are in ``xyxy`` pixels of the input image; scores are compared absolutely.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import torch

from detflow.errors import ConfigError, DetflowError, require_choice, require_positive
from detflow.faults import maybe_kill
from detflow.files import atomic_file
from detflow.inference import predict
from detflow.postprocess import apply_postprocess, check_postprocess
from detflow.runtime import OUTPUTS, OnnxDetector

SIMPLIFIERS = ("none", "onnxslim")


def export_onnx(
    *,
    model: torch.nn.Module,
    onnx_path: str | Path,
    sample: torch.Tensor,
    class_names: list[str],
    config: dict,
    opset: int = 17,
    postprocess: dict | None = None,
    simplify: str = "none",
) -> None:
    """Export ``model`` (eval mode) with a dynamic ``[3, H, W]`` input to ``onnx_path``;
    ``simplify``: ``none`` | ``onnxslim`` (constant folding and redundant-node removal).

    The file passes ``onnx.checker`` and carries class names, input spec, normalisation,
    score threshold and a hash of the training config as metadata properties; with
    ``postprocess`` (the shared ``postprocess.*`` config) also ``detflow_postprocess``, which
    :class:`detflow.runtime.OnnxDetector` applies to the graph's outputs.
    """
    require_choice("export.simplify", simplify, SIMPLIFIERS)
    model.eval()
    tmp = str(onnx_path)
    output_names = _output_order(model, sample)
    torch.onnx.export(
        model,
        ([sample],),
        tmp,
        opset_version=opset,
        dynamo=False,
        input_names=["image"],
        output_names=output_names,
        dynamic_axes={
            "image": {1: "height", 2: "width"},
            "boxes": {0: "detections"},
            "labels": {0: "detections"},
            "scores": {0: "detections"},
        },
    )
    proto = onnx.load(tmp)
    transform = model.transform
    meta = {
        "detflow_class_names": json.dumps(class_names),
        "detflow_input": json.dumps(
            {
                "layout": "CHW",
                "dtype": "float32",
                "range": [0, 1],
                "min_size": list(transform.min_size),
                "max_size": transform.max_size,
            }
        ),
        "detflow_normalize": json.dumps({"mean": transform.image_mean, "std": transform.image_std}),
        "detflow_score_threshold": str(_score_threshold(model)),
        "detflow_config_sha256": hashlib.sha256(
            json.dumps(config, sort_keys=True).encode()
        ).hexdigest(),
    }
    if postprocess is not None:
        meta["detflow_postprocess"] = json.dumps(check_postprocess(postprocess), sort_keys=True)
    if simplify == "onnxslim":
        import onnxslim  # only when asked for: it takes seconds to import and run

        proto = onnxslim.slim(proto)
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, tmp)


def _output_order(model: torch.nn.Module, sample: torch.Tensor) -> list[str]:
    """The detector's output keys in the order it returns them: the exported graph's outputs
    follow the dict's order (Faster R-CNN: boxes, labels, scores; FCOS, RetinaNet and SSD:
    boxes, scores, labels), so they are named from it, and read by name."""
    with torch.no_grad():
        keys = list(model([sample])[0])
    if sorted(keys) != sorted(OUTPUTS):
        raise DetflowError(f"export: the detector returns {keys}; expected {list(OUTPUTS)}")
    return keys


def _score_threshold(model) -> float:
    return float(getattr(getattr(model, "roi_heads", model), "score_thresh", 0.0))


def compare_detections(reference: dict, candidate: dict) -> dict:
    """Match ``candidate`` detections to ``reference`` (same label, nearest box, greedy by
    reference score); returns max box error (px), max score error and unmatched counts."""
    used = np.zeros(len(candidate["scores"]), dtype=bool)
    box_error, score_error, unmatched = 0.0, 0.0, []
    for i in np.argsort(-np.asarray(reference["scores"]), kind="stable"):
        same = np.flatnonzero((candidate["labels"] == reference["labels"][i]) & ~used)
        if same.size == 0:
            unmatched.append(float(reference["scores"][i]))
            continue
        distance = np.abs(candidate["boxes"][same] - reference["boxes"][i]).max(axis=1)
        j = same[int(np.argmin(distance))]
        used[j] = True
        box_error = max(box_error, float(distance.min()))
        score_error = max(score_error, abs(float(candidate["scores"][j] - reference["scores"][i])))
    unmatched += [float(s) for s in np.asarray(candidate["scores"])[~used]]
    return {
        "max_box_error_px": box_error,
        "max_score_error": score_error,
        "unmatched_scores": unmatched,
    }


def check_parity(
    *,
    model: torch.nn.Module,
    onnx_path: str | Path,
    images: list[torch.Tensor],
    names: list[str],
    max_box_error_px: float,
    max_score_error: float,
    score_threshold: float,
    postprocess: dict | None = None,
) -> dict:
    """Compare ORT with PyTorch on ``images``; DetflowError names the worst image on failure.

    ``postprocess``: the shared ``postprocess.*`` config; both outputs go through the same
    :func:`detflow.postprocess.apply_postprocess` before they are compared (None: the raw
    outputs are compared). Unmatched detections are tolerated only within
    ``max_score_error`` of ``score_threshold`` (they may cross it through rounding alone).
    """
    detector = OnnxDetector(onnx_path, postprocess=False)  # raw outputs: applied below
    worst, report = (
        None,
        {"images": len(images), "max_box_error_px": 0.0, "max_score_error": 0.0, "detections": 0},
    )
    for name, image in zip(names, images, strict=True):
        reference = predict(model, [image], postprocess=postprocess)[0]
        reference = {k: v.numpy() for k, v in reference.items()}
        candidate = detector(image.numpy())
        if postprocess is not None:
            candidate = apply_postprocess(
                candidate["boxes"], candidate["scores"], candidate["labels"], config=postprocess
            )
        result = compare_detections(reference, candidate)
        report["detections"] += len(reference["scores"])
        bad = [s for s in result["unmatched_scores"] if s > score_threshold + max_score_error]
        for key in ("max_box_error_px", "max_score_error"):
            report[key] = max(report[key], result[key])
        failed = (
            bad
            or result["max_box_error_px"] > max_box_error_px
            or result["max_score_error"] > max_score_error
        )
        if failed and worst is None:
            worst = (name, result, bad)
        maybe_kill("export.image")
    report["passed"] = worst is None
    if worst is not None:
        name, result, bad = worst
        raise DetflowError(
            f"ONNX parity failed on {name}: box error {result['max_box_error_px']:.3f}px "
            f"(limit {max_box_error_px}), score error {result['max_score_error']:.2e} "
            f"(limit {max_score_error}), {len(bad)} unmatched detections; not exported"
        )
    return report


def parity_image_count(parity_images, available: int) -> int:
    """How many test images the parity check uses: ``export.parity_images`` (an integer >= 1,
    checked) or all ``available`` when there are fewer."""
    require_positive("export.parity_images", parity_images, integer=True)
    return min(parity_images, available)


def check_export_options(*, opset, max_box_error_px, max_score_error) -> None:
    """ConfigError naming the ``export.*`` key that is of the wrong type or out of range."""
    require_positive("export.opset", opset, integer=True)
    if opset < 11:  # torchvision's detectors need opset 11 or later
        raise ConfigError(f"export.opset={opset!r} must be an ONNX opset >= 11 (e.g. 17)")
    require_positive("export.max_box_error_px", max_box_error_px, allow_zero=True)
    require_positive("export.max_score_error", max_score_error, allow_zero=True)


def export_verified(
    *,
    model: torch.nn.Module,
    onnx_path: str | Path,
    images: list[torch.Tensor],
    names: list[str],
    class_names: list[str],
    config: dict,
    opset: int,
    max_box_error_px: float,
    max_score_error: float,
    postprocess: dict | None = None,
    simplify: str = "none",
) -> dict:
    """Export (``simplify``: see :func:`export_onnx`), then check parity on ``images`` (after
    ``postprocess``, see :func:`check_parity`); the file appears at ``onnx_path`` only if
    parity holds. Returns the parity report."""
    check_export_options(
        opset=opset, max_box_error_px=max_box_error_px, max_score_error=max_score_error
    )
    if not images:
        raise DetflowError("export: no images to check parity on; the test split is empty")
    with atomic_file(onnx_path) as tmp:
        export_onnx(
            model=model,
            onnx_path=tmp,
            sample=images[0],
            class_names=class_names,
            config=config,
            opset=opset,
            postprocess=postprocess,
            simplify=simplify,
        )
        report = check_parity(
            model=model,
            onnx_path=tmp,
            images=images,
            names=names,
            max_box_error_px=max_box_error_px,
            max_score_error=max_score_error,
            score_threshold=(
                postprocess["score_threshold"] if postprocess else _score_threshold(model)
            ),
            postprocess=postprocess,
        )
    report["opset"] = opset
    report["simplify"] = simplify
    report["nodes"] = len(onnx.load(str(onnx_path), load_external_data=False).graph.node)
    report["size_mb"] = Path(onnx_path).stat().st_size / 1e6
    return report
