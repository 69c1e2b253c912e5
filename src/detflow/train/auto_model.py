"""Every ``auto`` of ``model.*`` and ``postprocess.*`` resolved from the data check
(:mod:`detflow.train.data_check`), before the first step; each choice comes with its reason.

In order (each step sees the previous one's result):

- ``model.min_size`` / ``model.max_size`` (input size): 416 px (``DEFAULT_INPUT_SIZE``) while
  the model's best possible recall there is at least :data:`LOW_RECALL`; below it (objects too
  small for the model's strides at that size) the smallest of :data:`LARGER_INPUTS` — the CPU
  budget: 640 px costs about 2.4× the compute of 416 px — at which the recall (with anchors
  fitted, where they are ``auto``) reaches it, else the one that raises it most.
- ``model.anchor_sizes`` / ``model.anchor_aspect_ratios``: the defaults while the recall is at
  least :data:`LOW_RECALL`; below it, fitted to the boxes (:func:`~detflow.train.data_check.
  fit_anchors`) when the fitted anchors match more boxes.
- ``model.rois_per_image``: :func:`~detflow.train.data_check.rois_for` the p95 of boxes per
  image.
- ``postprocess.max_detections``: 100, or the densest train or val image's box count (the
  test split is only reported on).
"""

from __future__ import annotations

from torch import nn

from detflow.data.box_stats import data_report, input_boxes
from detflow.model.build import AUTO, SSD_FIXED_SIZES, set_postprocess
from detflow.model.mobilenet import ANCHOR_ASPECT_RATIOS, ANCHOR_SIZES, ROIS_PER_IMAGE
from detflow.model.postprocess_config import DEFAULT_MAX_DETECTIONS, PostprocessOptions
from detflow.train.data_check import (
    anchor_generator,
    best_possible_recall,
    budgets,
    fit_anchors,
    input_size,
    rois_for,
    single_level_generator,
)

# Best possible recall under this: a larger input, then anchors fitted to the boxes (auto).
# Position-aware recall at IoU 0.5 is stricter than ultralytics' shape-only check (0.98
# there): the bundled thermal set measures 0.80 with the default anchors and trains well.
LOW_RECALL = 0.75
LARGER_INPUTS = (512, 640)
MIN_GAIN = 0.05  # a larger input that reaches no LOW_RECALL must raise the recall this much
ANCHOR_KEYS = ("anchor_sizes", "anchor_aspect_ratios")


def resolve_auto(
    model_config: dict,
    postprocess: PostprocessOptions,
    model: nn.Module,
    check: dict,
    dataset,
    *,
    whole_image_boxes: int = 0,
) -> tuple[dict, PostprocessOptions, dict]:
    """Resolve every ``auto`` of ``model_config`` and ``postprocess`` from ``check`` (the
    :func:`~detflow.train.data_check.check_data` of ``model``, built with the defaults, on
    ``dataset``); returns the resolved model config, post-processing and the choices
    ``{key: {"value", "reason"}}``. ``model`` is set to the choices and ``check`` updated to
    them (``data`` at the chosen input size, ``best_possible_recall``, ``budgets``; the
    defaults' recall stays as ``best_possible_recall_default``). ``whole_image_boxes``: for a
    model trained on tiles (``dataset`` then holds tiles), the densest full train or val
    image's box count: its ``postprocess.max_detections`` caps the merged image, so it is at
    least that."""
    config, choices = dict(model_config), {}
    check["best_possible_recall_default"] = check["best_possible_recall"]
    _resolve_input_size(config, model, check, dataset, choices)
    _resolve_anchors(config, model, check, dataset, choices)
    if config.get("rois_per_image") == AUTO:
        p95 = check["data"]["boxes_per_image"]["p95"]
        rois = rois_for(p95, default=ROIS_PER_IMAGE)
        config["rois_per_image"] = rois
        model.roi_heads.fg_bg_sampler.batch_size_per_image = rois
        choices["model.rois_per_image"] = {
            "value": rois,
            "reason": f"{p95:g} boxes per image (p95) × 16 RoIs per box, as a power of two "
            f">= {ROIS_PER_IMAGE}, at most 512",
        }
    if postprocess.max_detections == AUTO:
        postprocess = _resolve_max_detections(postprocess, model, check, choices, whole_image_boxes)
    check["budgets"] = budgets(model, check["data"], val_report=check["val"])
    check["auto"] = choices
    return config, postprocess, choices


def _resolve_input_size(config: dict, model: nn.Module, check: dict, dataset, choices) -> None:
    if config.get("min_size") != AUTO:
        return
    built = input_size(model)["min_size"]
    fixed = SSD_FIXED_SIZES.get(config.get("name", ""))
    if fixed or model.transform.fixed_size is not None:
        size, reason = built, "the model's input size is fixed"
    else:
        size, reason = _input_size_for_recall(config, model, dataset, check)
    _set_input_size(model, size, max_size=config.get("max_size"))
    if size != built:
        images = input_boxes(dataset, **input_size(model))
        check["data"] = data_report(dataset, **input_size(model))
        check["best_possible_recall"] = best_possible_recall(model, images)
    config["min_size"] = size
    config["max_size"] = input_size(model)["max_size"]
    choices["model.min_size"] = {"value": size, "reason": reason}


def _input_size_for_recall(config, model, dataset, check) -> tuple[int, str]:
    """The input size and its reason (see the module doc)."""
    base = input_size(model)["min_size"]
    if check["best_possible_recall"] >= LOW_RECALL:
        return base, f"best possible recall {check['best_possible_recall']:.3f} >= {LOW_RECALL}"
    base_recall = _best_recall(config, model, dataset)
    tried = {}
    for size in LARGER_INPUTS:
        _set_input_size(model, size, max_size=config.get("max_size"))
        tried[size] = _best_recall(config, model, dataset)
        if tried[size] >= LOW_RECALL:
            break
    _set_input_size(model, base, max_size=config.get("max_size"))
    listed = ", ".join(f"{s} px {r:.3f}" for s, r in tried.items())
    best = max(tried, key=lambda s: (tried[s] >= LOW_RECALL, tried[s], -s))
    if tried[best] >= LOW_RECALL or tried[best] >= base_recall + MIN_GAIN:
        return best, (
            f"best possible recall {base_recall:.3f} at {base} px < {LOW_RECALL} (objects "
            f"small for the model's strides); larger inputs: {listed}"
        )
    return base, (
        f"best possible recall {base_recall:.3f} at {base} px < {LOW_RECALL}, but larger "
        f"inputs raise it by less than {MIN_GAIN}: {listed}"
    )


def _best_recall(config, model, dataset) -> float:
    """Best possible recall at ``model``'s current input size: with its anchors, or with
    anchors fitted to the boxes where they are ``auto``, whichever is higher."""
    images = input_boxes(dataset, **input_size(model))
    recall = best_possible_recall(model, images)
    if not any(config.get(k) == AUTO for k in ANCHOR_KEYS) or not hasattr(model, "rpn"):
        return recall
    default_generator = anchor_generator(model)
    sizes, ratios = fit_anchors(images)
    model.rpn.anchor_generator = single_level_generator(sizes, ratios)
    fitted = best_possible_recall(model, images)
    model.rpn.anchor_generator = default_generator
    return max(recall, fitted)


def _set_input_size(model: nn.Module, size: int, *, max_size) -> None:
    """Resize to ``size`` (short side), the long side at most ``max_size`` (``auto``: the
    same; a set ``max_size`` is kept as given)."""
    model.transform.min_size = (int(size),)
    model.transform.max_size = int(size if max_size in (None, AUTO) else max_size)


def _resolve_anchors(config: dict, model: nn.Module, check: dict, dataset, choices) -> None:
    auto = [k for k in ANCHOR_KEYS if config.get(k) == AUTO]
    recall = check["best_possible_recall"]
    if not auto:
        return
    sizes, ratios = ANCHOR_SIZES, ANCHOR_ASPECT_RATIOS
    given = {k: config[k] for k in ANCHOR_KEYS if k not in auto}
    if recall >= LOW_RECALL:
        reason = f"best possible recall {recall:.3f} >= {LOW_RECALL} with the default anchors"
    else:
        images = input_boxes(dataset, **input_size(model))
        fit_sizes, fit_ratios = fit_anchors(images)
        candidate = {"anchor_sizes": fit_sizes, "anchor_aspect_ratios": fit_ratios, **given}
        default_generator = anchor_generator(model)
        model.rpn.anchor_generator = single_level_generator(
            candidate["anchor_sizes"], candidate["anchor_aspect_ratios"]
        )
        fitted_recall = best_possible_recall(model, images)
        if fitted_recall > recall:
            sizes, ratios = candidate["anchor_sizes"], candidate["anchor_aspect_ratios"]
            reason = (
                f"best possible recall {recall:.3f} < {LOW_RECALL} with the default anchors; "
                f"fitted to the boxes' size and aspect-ratio quantiles: {fitted_recall:.3f}"
            )
            recall = fitted_recall
        else:
            model.rpn.anchor_generator = default_generator
            reason = (
                f"best possible recall {recall:.3f} < {LOW_RECALL} with the default anchors, "
                f"but anchors fitted to the boxes match no more ({fitted_recall:.3f})"
            )
    values = {"anchor_sizes": list(sizes), "anchor_aspect_ratios": list(ratios)}
    for key in auto:
        config[key] = values[key]
        choices[f"model.{key}"] = {"value": values[key], "reason": reason}
    check["best_possible_recall"] = recall


def _resolve_max_detections(
    postprocess, model, check, choices, whole_image_boxes: int
) -> PostprocessOptions:
    densest = check["budgets"]["densest_boxes"]
    value = max(DEFAULT_MAX_DETECTIONS, densest, whole_image_boxes)
    postprocess = postprocess.with_max_detections(value)
    set_postprocess(
        model,
        score_threshold=postprocess.score_threshold,
        nms_iou=postprocess.nms_iou,
        max_detections=value,
    )
    if whole_image_boxes > max(DEFAULT_MAX_DETECTIONS, densest):
        reason = "tiled: the merged full image is capped; the densest full train or val image"
        reason += f" has {whole_image_boxes} boxes"
    else:
        reason = f"the densest train or val image has {densest} boxes; at least "
        reason += f"{DEFAULT_MAX_DETECTIONS}"
    choices["postprocess.max_detections"] = {"value": value, "reason": reason}
    return postprocess
