"""``model.name: auto`` (the default, ``conf/model/auto.yaml``): which detector to train,
chosen from the data check before the first step, with its reason.

- :data:`MULTI_LEVEL` (FCOS on the offline MobileNetV2, a feature pyramid of strides 8-64:
  measured, 3 seeds each, far better than Faster R-CNN on the bundled set and on small dense
  objects, 2.7 mAP50 points lower but steadier on raccoon, and faster to train;
  docs/benchmarks.md, "The candidate table") while its best possible recall, after every
  ``auto`` of :mod:`detflow.train.auto_model` (a larger input), reaches
  :data:`~detflow.train.auto_model.LOW_RECALL`;
- else :data:`SINGLE_LEVEL` (Faster R-CNN on the same backbone, one stride-32 map with anchors
  fitted to the boxes) when its best possible recall is higher (docs/training.md, "Which
  model").
- A checkpoint in ``model.weights`` decides by itself: its own model.

A key only Faster R-CNN has (anchors, RoIs), set to a value instead of ``auto``, picks it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from detflow.core.errors import ConfigError
from detflow.model.build import AUTO
from detflow.model.checkpoint_file import read_checkpoint
from detflow.train.auto_model import LOW_RECALL

SINGLE_LEVEL = "fasterrcnn_mobilenet_v2"
MULTI_LEVEL = "fcos_mobilenet_v2"
SHARED_KEYS = (
    "weights",
    "backbone_weights",
    "trainable_backbone_layers",
    "min_size",
    "max_size",
)
SINGLE_LEVEL_ONLY = ("anchor_sizes", "anchor_aspect_ratios", "rois_per_image")
MULTI_LEVEL_ONLY = ("head_conv", "fpn_channels", "levels")  # FCOS's structure (issue 38)

# check(model config) -> (resolved model config, resolved post-processing, data check)
Checker = Callable[[dict], tuple[dict, object, dict]]


def candidate(model_config: dict, name: str) -> dict:
    """``model_config`` (``name: auto``) as the config of ``name``: the keys that model takes."""
    if name == SINGLE_LEVEL:
        kept = {k: v for k, v in model_config.items() if k not in MULTI_LEVEL_ONLY}
        return {**kept, "name": name}
    keys = (*SHARED_KEYS, *MULTI_LEVEL_ONLY)
    return {"name": name, **{k: model_config[k] for k in keys if k in model_config}}


def choose_model(model_config: dict, check: Checker) -> tuple[dict, object, dict]:
    """Resolve ``model_config["name"] == "auto"`` (see the module doc) with ``check``, which
    builds a config's model and resolves its other ``auto`` keys; returns ``check``'s result
    for the chosen model, its data check extended with the choice (``auto["model.name"]``)
    and every candidate's best possible recall (``best_possible_recall_by_model``)."""
    weights = model_config.get("weights")
    if weights not in (None, "none"):
        name = _checkpoint_model(str(weights))
        return _chosen(
            check(candidate(model_config, name)), {}, f"model.weights is a {name} checkpoint"
        )
    fixed = [k for k in SINGLE_LEVEL_ONLY if model_config.get(k, AUTO) != AUTO]
    if fixed:
        single = check(candidate(model_config, SINGLE_LEVEL))
        recalls = {SINGLE_LEVEL: single[2]["best_possible_recall"]}
        return _chosen(single, recalls, f"model.{fixed[0]} is set (Faster R-CNN only)")
    multi = check(candidate(model_config, MULTI_LEVEL))
    recalls = {MULTI_LEVEL: multi[2]["best_possible_recall"]}
    size = multi[0]["min_size"]
    if recalls[MULTI_LEVEL] >= LOW_RECALL:
        return _chosen(
            multi,
            recalls,
            f"best possible recall {recalls[MULTI_LEVEL]:.3f} >= {LOW_RECALL} at {size} px"
            " with a feature pyramid (strides 8-64)",
        )
    single = check(candidate(model_config, SINGLE_LEVEL))
    recalls[SINGLE_LEVEL] = single[2]["best_possible_recall"]
    low = f"{MULTI_LEVEL}'s best possible recall {recalls[MULTI_LEVEL]:.3f} < {LOW_RECALL}"
    if recalls[SINGLE_LEVEL] > recalls[MULTI_LEVEL]:
        return _chosen(
            single,
            recalls,
            f"{low} at {size} px; {SINGLE_LEVEL}'s anchors match more: "
            f"{recalls[SINGLE_LEVEL]:.3f} at {single[0]['min_size']} px",
        )
    return _chosen(
        multi, recalls, f"{low}, and {SINGLE_LEVEL} matches no more ({recalls[SINGLE_LEVEL]:.3f})"
    )


def _checkpoint_model(weights: str) -> str:
    if not Path(weights).is_file():
        raise ConfigError(
            f"model.weights={weights!r} with model.name=auto: only a detflow checkpoint file "
            "(…/best.pt) decides the model; for a torchvision weights name set model=<name>"
        )
    return read_checkpoint(weights)["model"]["name"]


def _chosen(result: tuple, recalls: dict, reason: str) -> tuple[dict, object, dict]:
    config, postprocess, check = result
    check["best_possible_recall_by_model"] = recalls
    check["auto"] = {"model.name": {"value": config["name"], "reason": reason}, **check["auto"]}
    return config, postprocess, check
