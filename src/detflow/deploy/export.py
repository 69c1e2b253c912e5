"""export: the trained detector → ONNX with pre- and post-processing in the graph, gated by
a parity check of ONNX Runtime against PyTorch on real images.

Box errors are in ``xyxy`` pixels of the input image; scores are compared absolutely. A model
trained on tiles carries its :class:`~detflow.core.tile_settings.TileSettings` in the file
(``detflow_tiles``), and the gate also checks sliced inference end to end: ONNX Runtime
sliced (:class:`~detflow.deploy.onnx_detector.OnnxDetector`) against PyTorch sliced
(:func:`detflow.evaluate.inference.sliced_predictor`) on the same full images.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from detflow.core.errors import ConfigError, DetflowError, require_positive
from detflow.core.faults import maybe_kill
from detflow.core.files import atomic_file
from detflow.core.options import ConfigOptions
from detflow.core.tile_settings import TileSettings
from detflow.deploy.onnx_detector import OUTPUTS, TILES_KEY, OnnxDetector
from detflow.evaluate.inference import detect_images, sliced_predictor
from detflow.model.postprocess import apply_postprocess
from detflow.model.postprocess_config import PostprocessOptions

SIMPLIFIERS = ("none", "onnxslim")


@dataclass(frozen=True, kw_only=True)
class ExportOptions(ConfigOptions):
    """The validated ``export.*`` (see conf/config.yaml): the ONNX opset, the val images the
    parity check uses and its tolerances, and the graph simplifier."""

    SECTION = "export"

    opset: int = 17
    parity_images: int = 8
    max_box_error_px: float = 1.0
    max_score_error: float = 0.001
    simplify: str = field(default="none", metadata={"choices": SIMPLIFIERS})

    def check(self) -> None:
        require_positive("export.opset", self.opset, integer=True)
        if self.opset < 11:  # torchvision's detectors need opset 11 or later
            raise ConfigError(f"export.opset={self.opset!r} must be an ONNX opset >= 11 (e.g. 17)")
        require_positive("export.parity_images", self.parity_images, integer=True)
        require_positive("export.max_box_error_px", self.max_box_error_px, allow_zero=True)
        require_positive("export.max_score_error", self.max_score_error, allow_zero=True)


def export_onnx(
    *,
    model: torch.nn.Module,
    onnx_path: str | Path,
    sample: torch.Tensor,
    class_names: list[str],
    config: dict,
    options: ExportOptions,
    postprocess: PostprocessOptions | None = None,
    tiles: TileSettings | None = None,
) -> None:
    """Export ``model`` (eval mode) with a dynamic ``[3, H, W]`` input to ``onnx_path`` with
    ``options.opset``; ``options.simplify``: ``none`` | ``onnxslim`` (constant folding and
    redundant-node removal).

    The file passes ``onnx.checker`` and carries class names, input spec, normalisation,
    score threshold and a hash of the training config as metadata properties; with
    ``postprocess`` (the shared ``postprocess.*`` options) also ``detflow_postprocess`` (their
    JSON), which :class:`detflow.deploy.onnx_detector.OnnxDetector` applies to the graph's
    outputs; with ``tiles`` (the checkpoint's) also ``detflow_tiles`` (their JSON), with
    which the detector slices.
    """
    model.eval()
    tmp = str(onnx_path)
    output_names = _output_order(model, sample)
    with warnings.catch_warnings():  # torchvision's tracer notes: nothing a user can act on
        warnings.simplefilter("ignore", UserWarning)  # TracerWarning is one; torch.tensor copies
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation
        _trace(model, sample, tmp, options.opset, output_names)
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
        meta["detflow_postprocess"] = json.dumps(postprocess.to_dict(), sort_keys=True)
    if tiles is not None:
        meta[TILES_KEY] = json.dumps(tiles.to_dict(), sort_keys=True)
    if options.simplify == "onnxslim":
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
    options: ExportOptions,
    score_threshold: float,
    postprocess: PostprocessOptions | None = None,
    tiles: TileSettings | None = None,
) -> dict:
    """Compare ORT with PyTorch on ``images`` within ``options.max_box_error_px`` and
    ``options.max_score_error``, image by image and all of them as one batch (the graph with a
    batch axis, :mod:`detflow.deploy.batch_graph`); DetflowError names the worst image on
    failure.

    ``postprocess``: the shared ``postprocess.*`` options; both outputs go through the same
    :func:`detflow.model.postprocess.apply_postprocess` before they are compared (None: the raw
    outputs are compared). Unmatched detections are tolerated only within
    ``max_score_error`` of ``score_threshold`` (they may cross it through rounding alone).
    ``tiles``: also each image sliced, ONNX Runtime against PyTorch (:func:`check_sliced`).
    """
    detector = OnnxDetector(onnx_path, postprocess=False, sliced=False)  # raw: applied below
    batched = detector.detect_batch([image.numpy() for image in images])
    report = {"images": len(images), "batch": len(images), "max_box_error_px": 0.0}
    report |= {"max_score_error": 0.0, "detections": 0}
    worst = None
    for name, image, in_batch in zip(names, images, batched, strict=True):
        reference = detect_images(model, [image], postprocess=postprocess)[0]
        reference = {k: v.numpy() for k, v in reference.items()}
        report["detections"] += len(reference["scores"])
        for how, candidate in (("", detector(image.numpy())), (" (in a batch)", in_batch)):
            if postprocess is not None:
                candidate = apply_postprocess(
                    candidate["boxes"], candidate["scores"], candidate["labels"], config=postprocess
                )
            result = compare_detections(reference, candidate)
            bad = _failures(result, options, score_threshold)
            for key in ("max_box_error_px", "max_score_error"):
                report[key] = max(report[key], result[key])
            if bad is not None and worst is None:
                worst = (name + how, result, bad)
        maybe_kill("export.image")
    if tiles is not None:
        report["sliced"], bad = check_sliced(
            model=model,
            onnx_path=onnx_path,
            images=images,
            names=names,
            options=options,
            score_threshold=score_threshold,
            postprocess=postprocess,
            tiles=tiles,
        )
        worst = worst or bad
    report["passed"] = worst is None
    if worst is not None:
        name, result, bad = worst
        raise DetflowError(
            f"ONNX parity failed on {name}: box error {result['max_box_error_px']:.3f}px "
            f"(limit {options.max_box_error_px}), score error {result['max_score_error']:.2e} "
            f"(limit {options.max_score_error}), {len(bad)} unmatched detections; not exported"
        )
    return report


def check_sliced(
    *,
    model: torch.nn.Module,
    onnx_path: str | Path,
    images: list[torch.Tensor],
    names: list[str],
    options: ExportOptions,
    score_threshold: float,
    postprocess: PostprocessOptions | None,
    tiles: TileSettings,
) -> tuple[dict, tuple | None]:
    """Sliced inference end to end on ``images`` (full ``[3, H, W]`` images in 0..1): the
    exported file's detector (which slices with its ``detflow_tiles`` and applies its
    post-processing, NumPy only) against PyTorch sliced with ``tiles`` and ``postprocess``.
    Returns the report (``images``, ``tiles`` in all, ``detections``, the worst box and
    score errors) and the first failure ``(name, result, unmatched)`` or None."""
    detector = OnnxDetector(onnx_path, postprocess=postprocess is not None)
    if detector.tiles != tiles:
        raise DetflowError(f"{onnx_path}: detflow_tiles {detector.tiles} differ from {tiles}")
    reference_of = sliced_predictor(model, tiles=tiles, postprocess=postprocess)
    report = {"images": len(images), "tiles": 0, "detections": 0}
    report |= {"max_box_error_px": 0.0, "max_score_error": 0.0}
    worst = None
    for name, image in zip(names, images, strict=True):
        reference = reference_of(image)
        result = compare_detections(reference, detector(image.numpy()))
        report["tiles"] += detector.last_tiles
        report["detections"] += len(reference["scores"])
        for key in ("max_box_error_px", "max_score_error"):
            report[key] = max(report[key], result[key])
        bad = _failures(result, options, score_threshold)
        if bad is not None and worst is None:
            worst = (f"{name} (sliced, {detector.last_tiles} tiles)", result, bad)
        maybe_kill("export.image")
    return report, worst


def _failures(result: dict, options: ExportOptions, score_threshold: float) -> list | None:
    """None when ``result`` (:func:`compare_detections`) is within the tolerances, else the
    unmatched scores that count against it (possibly none: then a box or score error)."""
    bad = [s for s in result["unmatched_scores"] if s > score_threshold + options.max_score_error]
    failed = (
        bad
        or result["max_box_error_px"] > options.max_box_error_px
        or result["max_score_error"] > options.max_score_error
    )
    return bad if failed else None


def parity_count(options: ExportOptions, available: int) -> int:
    """How many val images the parity check uses: ``export.parity_images``, or all
    ``available`` when there are fewer."""
    return min(options.parity_images, available)


def export_verified(
    *,
    model: torch.nn.Module,
    onnx_path: str | Path,
    images: list[torch.Tensor],
    names: list[str],
    class_names: list[str],
    config: dict,
    options: ExportOptions,
    postprocess: PostprocessOptions | None = None,
    tiles: TileSettings | None = None,
) -> dict:
    """Export (see :func:`export_onnx`), then check parity on ``images`` (after
    ``postprocess``, see :func:`check_parity`); the file appears at ``onnx_path`` only if
    parity holds. Returns the parity report. ``images``: the first ``options.parity_images``
    val images (:func:`parity_count`). ``tiles``: the checkpoint's, written into the file
    and checked sliced end to end (``report["sliced"]``)."""
    if not images:
        raise DetflowError("export: no images to check parity on; the val split is empty")
    with atomic_file(onnx_path) as tmp:
        export_onnx(
            model=model,
            onnx_path=tmp,
            sample=images[0],
            class_names=class_names,
            config=config,
            options=options,
            postprocess=postprocess,
            tiles=tiles,
        )
        report = check_parity(
            model=model,
            onnx_path=tmp,
            images=images,
            names=names,
            options=options,
            score_threshold=(
                postprocess.score_threshold if postprocess else _score_threshold(model)
            ),
            postprocess=postprocess,
            tiles=tiles,
        )
    report["opset"] = options.opset
    report["simplify"] = options.simplify
    report["nodes"] = len(onnx.load(str(onnx_path), load_external_data=False).graph.node)
    report["size_mb"] = Path(onnx_path).stat().st_size / 1e6
    return report


def _trace(model, sample: torch.Tensor, path: str, opset: int, output_names: list[str]) -> None:
    """The TorchScript exporter over one ``[3, H, W]`` sample, the image's size dynamic."""
    torch.onnx.export(
        model,
        ([sample],),
        path,
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
