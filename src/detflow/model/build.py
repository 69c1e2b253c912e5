"""Detector builders. Every model takes images as a list of ``[3, H, W]`` float tensors in
0..1 and returns, per image, ``boxes`` (``[N, 4]`` ``xyxy`` pixels of the input image),
``labels`` (``[N]`` int64 category ids 1..C; 0 is background) and ``scores`` (``[N]``).

``fcos_mobilenet_v2`` (what the default ``auto`` picks on most data),
``fasterrcnn_mobilenet_v2`` and ``ssdlite_mobilenet_v2`` are built here on torchvision's
ImageNet MobileNetV2, whose weights file is available offline (:mod:`detflow.model.mobilenet`,
:mod:`detflow.model.ssdlite`). Every other name is a torchvision detection builder
(``torchvision.models.get_model``).

Initial weights (``weights``): ``none``; a torchvision weights name of the whole detector
(``COCO_V1``, ``DEFAULT``…), loaded, then its class head replaced for our class count; or a
detflow checkpoint path, loaded the same way (with ``weights_only=True``). The trunk's batch
norm is frozen whenever it starts from trained weights (``weights`` or ``backbone_weights``).
"""

from __future__ import annotations

import inspect
import typing
import urllib.error
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import MobileNet_V2_Weights, WeightsEnum
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator

from detflow.core.errors import ConfigError, first_line, require_choice, require_positive
from detflow.model import mobilenet, ssdlite
from detflow.model.backbone import freeze_batchnorm, set_trainable_stages, trunk
from detflow.model.checkpoint_file import read_checkpoint
from detflow.model.heads import class_count, replace_class_head

CUSTOM_MODELS = {
    "fasterrcnn_mobilenet_v2": mobilenet.fasterrcnn_mobilenet_v2,
    "fcos_mobilenet_v2": mobilenet.fcos_mobilenet_v2,
    "ssdlite_mobilenet_v2": ssdlite.ssdlite_mobilenet_v2,
}
SSD_FIXED_SIZES = {"ssd300_vgg16": 300}  # SSDlite takes any square size
AUTO = "auto"  # a value the train stage fits to the data (detflow.train.data_check)
DEFAULT_INPUT_SIZE = 416  # input side of the CPU models; model.min_size=auto starts here


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(
        set(CUSTOM_MODELS)
        | set(torchvision.models.list_models(module=torchvision.models.detection))
    )


def is_pretrained(model_config: dict) -> bool:
    """Whether a model config starts from trained weights (its trunk norm is then frozen)."""
    return any(_none(model_config.get(k)) for k in ("weights", "backbone_weights"))


def build_model(
    *,
    name: str,
    num_classes: int,
    weights: str = "none",
    backbone_weights: str = "none",
    trainable_backbone_layers: int = 3,
    min_size: int | str = DEFAULT_INPUT_SIZE,
    max_size: int | str = DEFAULT_INPUT_SIZE,
    test_proposals: int = 1000,
    frozen_norm: bool | None = None,
    score_threshold: float = 0.05,
    nms_iou: float = 0.5,
    max_detections: int = 100,
    anchor_sizes=None,
    anchor_aspect_ratios=None,
    rois_per_image=None,
    head_conv: str | None = None,
    fpn_channels: int | None = None,
    levels=None,
) -> nn.Module:
    """Build a detector for ``num_classes`` object classes (background is added here).

    ``weights``: see the module doc; ``backbone_weights``: ``none`` or a torchvision weights
    name of the trunk (ignored when ``weights`` is set). Weights that are not cached are
    downloaded; where that fails, the error names the file to place in the cache.
    ``trainable_backbone_layers``: how many trunk stages train (:mod:`detflow.model.backbone`);
    ``min_size``/``max_size``: the resize of the short/long side (SSD: the square side);
    ``test_proposals``: region proposals kept per image at inference (two-stage models);
    ``frozen_norm``: freeze the trunk's batch norm (default: when starting pretrained).
    ``anchor_sizes`` (``sqrt(w·h)``, input pixels), ``anchor_aspect_ratios`` (``h / w``) and
    ``rois_per_image`` (RoIs sampled per image for the box head's loss): ``fasterrcnn_mobilenet_v2``
    only; ``None`` or ``auto`` is its default (the train stage resolves ``auto`` from the data
    first, :mod:`detflow.train.data_check`, and checkpoints store the resolved values).
    ``head_conv`` (``standard`` | ``depthwise``), ``fpn_channels`` and ``levels`` (pyramid
    strides): ``fcos_mobilenet_v2`` only (:func:`detflow.model.mobilenet.fcos_structure`);
    ``None`` is today's model. Checkpoints store them, so a restore builds the same structure.
    """
    min_size, max_size, adapted = _checked_arguments(
        name,
        num_classes,
        min_size=min_size,
        max_size=max_size,
        anchor_sizes=anchor_sizes,
        anchor_aspect_ratios=anchor_aspect_ratios,
        rois_per_image=rois_per_image,
        structure={"head_conv": head_conv, "fpn_channels": fpn_channels, "levels": levels},
    )
    kind = weights_kind(name, weights)
    source = (
        _read_source(weights, name, trainable_backbone_layers, adapted) if kind == "path" else None
    )
    if frozen_norm is None:
        frozen_norm = kind != "none" or _none(backbone_weights) is not None
    model = _architecture(
        name,
        num_classes=_source_classes(kind, source, num_classes),
        weights=weights if kind == "torchvision" else None,
        backbone_weights=_none(backbone_weights) if kind == "none" else None,
        trainable_layers=trainable_backbone_layers,
        sizes={"min_size": min_size, "max_size": max_size},
        proposals=test_proposals,
        adapted=adapted,
    )
    if source is not None:
        _load_source(model, source, weights)
    if frozen_norm:
        freeze_batchnorm(trunk(model))
    if class_count(model) != num_classes + 1:
        replace_class_head(model, num_classes + 1)
    set_trainable_stages(model, trainable_backbone_layers, key="model.trainable_backbone_layers")
    set_postprocess(
        model, score_threshold=score_threshold, nms_iou=nms_iou, max_detections=max_detections
    )
    return model


def build_skeleton(
    *,
    name: str,
    num_classes: int,
    trainable_backbone_layers: int = 3,
    min_size: int | str = DEFAULT_INPUT_SIZE,
    max_size: int | str = DEFAULT_INPUT_SIZE,
    test_proposals: int = 1000,
    score_threshold: float = 0.05,
    nms_iou: float = 0.5,
    max_detections: int = 100,
    anchor_sizes=None,
    anchor_aspect_ratios=None,
    rois_per_image=None,
    head_conv: str | None = None,
    fpn_channels: int | None = None,
    levels=None,
) -> nn.Module:
    """The structure of :func:`build_model`'s detector without its weights: every module on
    the meta device (no memory, nothing initialised or read), the anchor generators on the
    CPU. What the training plan measures a candidate by (input resize, feature-map strides,
    anchors, assignment, budgets: :mod:`detflow.train.data_check`) at a fraction of a real
    build's cost; it cannot run on images. Arguments as :func:`build_model`'s."""
    min_size, max_size, adapted = _checked_arguments(
        name,
        num_classes,
        min_size=min_size,
        max_size=max_size,
        anchor_sizes=anchor_sizes,
        anchor_aspect_ratios=anchor_aspect_ratios,
        rois_per_image=rois_per_image,
        structure={"head_conv": head_conv, "fpn_channels": fpn_channels, "levels": levels},
    )
    with torch.device("meta"):
        model = _architecture(
            name,
            num_classes=num_classes + 1,
            weights=None,
            backbone_weights=None,
            trainable_layers=trainable_backbone_layers,
            sizes={"min_size": min_size, "max_size": max_size},
            proposals=test_proposals,
            adapted=adapted,
        )
    _anchor_generators_on_cpu(model)
    set_postprocess(
        model, score_threshold=score_threshold, nms_iou=nms_iou, max_detections=max_detections
    )
    return model


def _checked_arguments(
    name: str, num_classes: int, *, min_size, max_size, structure: dict, **adaptable
):
    """The builders' shared checks: the name, the class count, the input sizes (as integers;
    SSD's square), the data-adapted arguments and FCOS's ``structure`` keys; returns
    ``(min_size, max_size, adapted)``, ``adapted`` the model builder's extra arguments."""
    require_choice("model.name", name, available_models())
    require_positive("num_classes", num_classes)
    min_size, max_size = input_sizes(name, min_size=min_size, max_size=max_size)
    if name.startswith("ssd"):
        _check_square_size(name, min_size=min_size, max_size=max_size)
    return min_size, max_size, {**_adapted(name, **adaptable), **_structure(name, **structure)}


def _anchor_generators_on_cpu(model: nn.Module) -> None:
    """Rebuild a skeleton's anchor generator outside the meta device (its cell anchors are
    tensors it moves to the feature maps' device, which a meta tensor cannot)."""
    owner = getattr(model, "rpn", model)
    generator = owner.anchor_generator
    if isinstance(generator, AnchorGenerator):
        owner.anchor_generator = AnchorGenerator(generator.sizes, generator.aspect_ratios)
    elif isinstance(generator, DefaultBoxGenerator):
        owner.anchor_generator = DefaultBoxGenerator(
            generator.aspect_ratios,
            scales=generator.scales,
            steps=generator.steps,
            clip=generator.clip,
        )


def input_sizes(name: str, *, min_size, max_size) -> tuple[int, int]:
    """``model.min_size``/``model.max_size`` as integers, checked: ``auto`` (resolved from the
    data by the train stage, :mod:`detflow.train.data_check`) builds at the default
    :data:`DEFAULT_INPUT_SIZE` (SSD300: 300); a ``max_size`` of ``auto`` follows ``min_size``."""
    if min_size == AUTO:
        min_size = SSD_FIXED_SIZES.get(name, DEFAULT_INPUT_SIZE)
    if max_size == AUTO:
        max_size = min_size
    for key, value in (("model.min_size", min_size), ("model.max_size", max_size)):
        if isinstance(value, str):
            raise ConfigError(f"{key}={value!r} is not allowed; use {AUTO} or a number of pixels")
        require_positive(key, value)
    return int(min_size), int(max_size)


def weights_kind(name: str, weights) -> str:
    """``none``, ``torchvision`` (a weights name of ``name``) or ``path`` (a checkpoint)."""
    if _none(weights) is None:
        return "none"
    text = str(weights)
    if text.endswith((".pt", ".pth")) or "/" in text:
        return "path"
    allowed = (
        []
        if name in CUSTOM_MODELS
        else list(torchvision.models.get_model_weights(name).__members__)
    )
    if text.rpartition(".")[2] not in allowed:
        names = ", ".join(["none", *allowed, "or a detflow checkpoint path (…/best.pt)"])
        raise ConfigError(f"model.weights={weights!r} is not allowed for {name}; use {names}")
    return "torchvision"


def set_postprocess(
    model: nn.Module, *, score_threshold: float, nms_iou: float, max_detections: int
) -> None:
    """Apply the shared ``postprocess.*`` config to a torchvision detector in place."""
    target = getattr(model, "roi_heads", model)
    if not hasattr(target, "score_thresh"):
        raise ConfigError(f"{type(model).__name__} has no score/NMS settings to configure")
    target.score_thresh = float(score_threshold)
    target.nms_thresh = float(nms_iou)
    target.detections_per_img = int(max_detections)


def _adapted(name: str, **values) -> dict:
    """The data-adapted builder arguments that are set (not None/auto), checked."""
    given = {k: v for k, v in values.items() if v is not None and v != AUTO}
    if given and name != "fasterrcnn_mobilenet_v2":
        keys = ", ".join(f"model.{k}" for k in given)
        raise ConfigError(f"{keys}: only fasterrcnn_mobilenet_v2 takes these; remove them")
    for key in ("anchor_sizes", "anchor_aspect_ratios"):
        if key in given:
            if not isinstance(given[key], list | tuple) or not given[key]:
                raise ConfigError(f"model.{key}={given[key]!r} must be auto or a list of numbers")
            for value in given[key]:
                require_positive(f"model.{key}", value)
            given[key] = tuple(given[key])
    if "rois_per_image" in given:
        require_positive("model.rois_per_image", given["rois_per_image"], integer=True)
    return given


def _structure(name: str, **values) -> dict:
    """FCOS's structure keys (``head_conv``, ``fpn_channels``, ``levels``) checked, every one
    resolved (None: its default), for ``fcos_mobilenet_v2``; for another model, none may be
    set."""
    if name == "fcos_mobilenet_v2":
        return mobilenet.fcos_structure(**values)
    given = [k for k, v in values.items() if v is not None]
    if given:
        keys = ", ".join(f"model.{k}" for k in given)
        raise ConfigError(f"{keys}: only fcos_mobilenet_v2 takes these; remove them")
    return {}


def _architecture(
    name, *, num_classes, weights, backbone_weights, trainable_layers, sizes, proposals, adapted
) -> nn.Module:
    """The detector with ``num_classes`` outputs (None: the weights' own), weights loaded."""
    if name in CUSTOM_MODELS:
        features = _load(
            lambda: mobilenet.mobilenet_v2_features(backbone_weights),
            key="model.backbone_weights",
            value=backbone_weights,
            weights_enum=MobileNet_V2_Weights,
        )
        extra = {"proposals": proposals, **adapted} if "rcnn" in name else adapted
        return CUSTOM_MODELS[name](
            features=features,
            num_classes=num_classes,
            trainable_layers=trainable_layers,
            **sizes,
            **extra,
        )
    extra = {"rpn_post_nms_top_n_test": proposals} if "rcnn" in name else {}
    model = _load(
        lambda: torchvision.models.get_model(
            name,
            weights=weights,
            weights_backbone=backbone_weights,
            num_classes=num_classes,
            **({} if name.startswith("ssd") else sizes),
            **extra,
        ),
        key="model.weights" if weights else "model.backbone_weights",
        value=weights or backbone_weights,
        weights_enum=torchvision.models.get_model_weights(name) if weights else _trunk_enum(name),
    )
    if name.startswith("ssd"):  # SSD resizes every image to one square
        model.transform.min_size, model.transform.max_size = (sizes["min_size"],), sizes["max_size"]
        model.transform.fixed_size = (sizes["min_size"], sizes["min_size"])
    return model


def _check_square_size(name: str, *, min_size: int, max_size: int) -> None:
    fixed = SSD_FIXED_SIZES.get(name)
    if min_size != max_size or (fixed and min_size != fixed):
        need = f"both {fixed}" if fixed else "equal (the square side)"
        raise ConfigError(f"model.min_size and model.max_size must be {need} for {name}")


def _source_classes(kind: str, source: dict | None, num_classes: int) -> int | None:
    if kind == "path":
        return len(source["class_names"]) + 1
    return None if kind == "torchvision" else num_classes + 1


def _read_source(path: str, name: str, trainable_layers: int, adapted: dict) -> dict:
    """A detflow checkpoint to start from, checked against the model being built (its
    trainable trunk stages and, for FCOS, the structure keys in ``adapted``)."""
    state = read_checkpoint(path)
    trained = state["model"]
    if trained["name"] != name:
        raise ConfigError(
            f"model.weights={path}: a {trained['name']} checkpoint; "
            f"set model={trained['name']} or start {name} from other weights"
        )
    if name in CUSTOM_MODELS and trained.get("trainable_backbone_layers") != trainable_layers:
        raise ConfigError(
            f"model.weights={path} was trained with model.trainable_backbone_layers="
            f"{trained.get('trainable_backbone_layers')}; set the same (frozen layers are folded)"
        )
    if name == "fcos_mobilenet_v2":
        stored = mobilenet.fcos_structure(**{k: trained.get(k) for k in adapted})
        for key, value in adapted.items():
            if stored[key] != value:
                raise ConfigError(
                    f"model.weights={path} was trained with model.{key}="
                    f"{_shown(stored[key])}; set the same (its weights fit that structure only)"
                )
    return state


def _shown(value):
    return list(value) if isinstance(value, tuple) else value


def _load_source(model: nn.Module, state: dict, path: str) -> None:
    if is_pretrained(state["model"]):  # the checkpoint's own structure: its trunk norm frozen
        freeze_batchnorm(trunk(model))
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as exc:
        detail = first_line(exc)
        raise ConfigError(f"model.weights={path}: its weights do not fit ({detail})") from exc


def _trunk_enum(name: str) -> type[WeightsEnum] | None:
    """The trunk's weights enum of a torchvision detection builder (to name its file)."""
    annotation = inspect.signature(torchvision.models.get_model_builder(name)).parameters.get(
        "weights_backbone"
    )
    options = typing.get_args(annotation.annotation) if annotation else ()
    enums = [o for o in options if isinstance(o, type) and issubclass(o, WeightsEnum)]
    return enums[0] if enums else None


def _none(value):
    return None if value in (None, "none", "None") else value


def _load(build, *, key: str, value, weights_enum=None):
    """Run ``build``; turn a failed weights download into a ConfigError naming the file."""
    try:
        return build()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        try:
            file_name = Path(weights_enum[str(value).rpartition(".")[2]].url).name
        except (KeyError, TypeError):
            file_name = "torchvision's weights file for it"
        raise ConfigError(
            f"{key}={value!r}: weights could not be downloaded ({exc}); place {file_name} in "
            f"{cache} (`make weights` does this for MobileNetV2) or set {key}=none"
        ) from exc
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{key}={value!r} is not a torchvision weights name ({exc})") from exc
