"""The model against the data, before the first step: best possible recall and budgets.

:func:`best_possible_recall` is the share of training boxes (at the configured input size)
that the model's assignment can give a positive at all: for anchor-based detectors (Faster
R-CNN's RPN, RetinaNet, SSD) some anchor of the model's own anchor generator overlaps the box
at IoU >= 0.5, anchors placed where the model places them for that image; for anchor-free
FCOS, some feature location lies inside the box, within FCOS's centre-sampling radius of its
centre, on a level whose regression range holds the box (torchvision's assignment rule). This
is ultralytics' pre-training "BPR" check, computed on real anchor positions (not on shapes
alone), so boxes much smaller than the stride count as unmatched.

:func:`fit_anchors` proposes anchor sizes and aspect ratios from the box distribution (for the
single-level anchor generator of ``fasterrcnn_mobilenet_v2``).
"""

from __future__ import annotations

import copy
import math
from collections import Counter

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from detflow.data.box_stats import InputBoxes, box_sizes, data_report, input_boxes

MATCH_IOU = 0.5


def anchor_generator(model: nn.Module) -> nn.Module:
    """The anchor (or FCOS location) generator of a torchvision detector."""
    rpn = getattr(model, "rpn", None)
    return rpn.anchor_generator if rpn is not None else model.anchor_generator


class AnchorGrid:
    """The anchors ``model`` places on an input of a given padded size, computed once per
    size (a pass of a copy of the backbone on the meta device gives the feature-map sizes
    without computing anything)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.divisible = int(getattr(model.transform, "size_divisible", 1)) or 1
        self._shape_backbone: nn.Module | None = None
        self._features: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._anchors: dict[tuple, tuple[torch.Tensor, list[int]]] = {}

    def padded(self, size: tuple[int, int]) -> tuple[int, int]:
        d = self.divisible
        return (-(-size[0] // d) * d, -(-size[1] // d) * d)

    def features(self, size: tuple[int, int]) -> list[torch.Tensor]:
        """Zero feature maps of the backbone's shapes for a padded input ``size``."""
        if size not in self._features:
            if self._shape_backbone is None:  # shapes only: a copy on the meta device
                self._shape_backbone = copy.deepcopy(self.model.backbone).to("meta").eval()
            with torch.no_grad():
                out = self._shape_backbone(torch.zeros(1, 3, *size, device="meta"))
            maps = list(out.values()) if isinstance(out, dict) else [out]
            self._features[size] = [torch.zeros(1, 1, *m.shape[-2:]) for m in maps]
        return self._features[size]

    def anchors(self, size: tuple[int, int]) -> tuple[torch.Tensor, list[int]]:
        """``[A, 4]`` ``xyxy`` anchors for an image of input ``size`` and the count per level."""
        padded = self.padded(size)
        generator = anchor_generator(self.model)
        key = (padded, id(generator))
        if key not in self._anchors:
            features = self.features(padded)
            images = ImageList(torch.zeros(1, 3, *padded), [padded])
            anchors = generator(images, features)[0]
            per_level = [int(f.shape[-2] * f.shape[-1]) for f in features]
            per_location = anchors.shape[0] // max(sum(per_level), 1)
            self._anchors[key] = (anchors, [n * per_location for n in per_level])
        return self._anchors[key]


def matched_boxes(model: nn.Module, images: list[InputBoxes], grid: AnchorGrid | None = None):
    """A boolean per box (images in order, boxes in order): can the model assign it?"""
    grid = grid or AnchorGrid(model)
    out = []
    for image in images:
        if not len(image.boxes):
            continue
        anchors, per_level = grid.anchors(image.size)
        boxes = torch.as_tensor(image.boxes, dtype=torch.float32)
        if isinstance(model, FCOS):
            out.append(_fcos_matched(anchors, per_level, boxes, model.center_sampling_radius))
        else:
            out.append((box_iou(boxes, anchors).max(dim=1).values >= MATCH_IOU).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def best_possible_recall(
    model: nn.Module, images: list[InputBoxes], grid: AnchorGrid | None = None
) -> float:
    """Share of the boxes of ``images`` that ``model``'s assignment can match (1.0 if none)."""
    matched = matched_boxes(model, images, grid)
    return round(float(matched.mean()), 4) if len(matched) else 1.0


def _fcos_matched(anchors, per_level, boxes, radius) -> np.ndarray:
    """torchvision's FCOS assignment (``FCOS.compute_loss``): location inside the box, within
    ``radius`` strides of its centre, max distance to an edge within the level's range."""
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    strides = anchors[:, 2] - anchors[:, 0]
    box_centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    near = (centers[:, None, :] - box_centers[None, :, :]).abs().max(dim=2).values
    match = near < radius * strides[:, None]
    x, y = centers[:, 0:1], centers[:, 1:2]
    x0, y0, x1, y1 = (boxes[None, :, k] for k in range(4))
    dist = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)
    match &= dist.min(dim=2).values > 0
    lower, upper = strides * 4, strides * 8
    lower[: per_level[0]] = 0
    upper[-per_level[-1] :] = float("inf")
    far = dist.max(dim=2).values
    match &= (far > lower[:, None]) & (far < upper[:, None])
    return match.any(dim=0).numpy()


def fit_anchors(
    images: list[InputBoxes], *, sizes: int = 5, ratios: int = 3
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Anchor sizes (``sqrt(w·h)``, input pixels) and aspect ratios (``h / w``) spread over
    the boxes' distribution: evenly spaced quantiles of each (sizes as integers, ratios to
    two decimals), duplicates merged."""
    widths, heights = box_sizes(images)
    keep = (widths > 0) & (heights > 0)
    widths, heights = widths[keep], heights[keep]
    if not len(widths):
        raise ValueError("no boxes to fit anchors to")
    qs = np.linspace(0.1, 0.9, sizes) if sizes > 1 else [0.5]
    size_values = np.quantile(np.sqrt(widths * heights), qs)
    rs = np.linspace(0.1, 0.9, ratios) if ratios > 1 else [0.5]
    # geometric spacing: ratios are multiplicative
    ratio_values = np.exp(np.quantile(np.log(heights / widths), rs))
    fitted_sizes = tuple(sorted({max(1, round(float(s))) for s in size_values}))
    fitted_ratios = tuple(sorted({round(float(r), 2) for r in ratio_values}))
    return fitted_sizes, fitted_ratios


def single_level_generator(sizes, ratios) -> AnchorGenerator:
    """The one-feature-map generator of ``fasterrcnn_mobilenet_v2``."""
    return AnchorGenerator(sizes=(tuple(sizes),), aspect_ratios=(tuple(ratios),))


def rois_for(boxes_p95: float, *, default: int, cap: int = 512, per_box: int = 16) -> int:
    """RoIs sampled per image so the densest images (p95 of boxes per image) get
    ``per_box`` RoIs each (a quarter of the sample is positives: 4 per box), as a power of
    two, never below ``default``, at most ``cap``."""
    need = boxes_p95 * per_box
    return int(min(cap, max(default, 2 ** math.ceil(math.log2(max(need, 1))))))


def input_size(model: nn.Module) -> dict:
    """The resize of ``model``'s transform: ``min_size``, ``max_size``, ``fixed_size``."""
    transform = model.transform
    return {
        "min_size": int(transform.min_size[-1]),
        "max_size": int(transform.max_size),
        "fixed_size": transform.fixed_size is not None,
    }


def budgets(model: nn.Module, report: dict, *, val_report: dict | None = None) -> dict:
    """The model's per-image budgets against the densest images (of the train report and of
    ``val_report`` when given; the test split is never read): RoIs sampled per image
    (two-stage models; a ``positive_fraction`` share of them may be positives) and detections
    kept per image, with a ``warnings`` list (empty when every budget fits)."""
    p95 = report["boxes_per_image"]["p95"]
    densest = max(report["boxes_per_image"]["max"], (val_report or {}).get("max_boxes", 0))
    heads = getattr(model, "roi_heads", model)
    out: dict = {"densest_boxes": int(densest), "boxes_per_image_p95": p95, "warnings": []}
    sampler = getattr(heads, "fg_bg_sampler", None)
    if sampler is not None:
        rois = int(sampler.batch_size_per_image)
        positives = int(rois * sampler.positive_fraction)
        out.update(rois_per_image=rois, positive_rois_per_image=positives)
        if positives < 4 * p95:
            out["warnings"].append(
                f"{rois} RoIs per image leave {positives} positives for {p95:g} boxes (p95 of "
                f"boxes per image): fewer than 4 per box; set model.rois_per_image >= "
                f"{rois_for(p95, default=rois, cap=4096)}"
            )
    detections = getattr(heads, "detections_per_img", None)
    if detections is not None:
        out["max_detections"] = int(detections)
        if detections < densest:
            out["warnings"].append(
                f"postprocess.max_detections={detections} is below the densest image's "
                f"{densest} boxes; set postprocess.max_detections >= {densest}"
            )
    return out


def check_data(model: nn.Module, dataset: dict, *, val_dataset: dict | None = None) -> dict:
    """The data report of ``dataset`` (a canonical dataset, the train split) at ``model``'s
    input size (a model or its :func:`~detflow.model.build.build_skeleton`), the model's best
    possible recall on it and its budgets against the densest images (of ``dataset`` and of
    ``val_dataset`` when given): a JSON-ready dict."""
    size = input_size(model)
    report = data_report(dataset, **size)
    images = input_boxes(dataset, **size)
    val = None
    if val_dataset is not None:
        counts = Counter(a["image_id"] for a in val_dataset["annotations"])
        val = {"images": len(val_dataset["images"]), "max_boxes": max(counts.values(), default=0)}
    return {
        "data": report,
        "val": val,
        "best_possible_recall": best_possible_recall(model, images),
        "budgets": budgets(model, report, val_report=val),
    }


def summary_line(check: dict) -> str:
    """One log line of a :func:`check_data` result."""
    data = check["data"]
    size = data["box_size_px"]
    return (
        f"data check: {data['images']} train images, {data['boxes']} boxes, "
        f"{data['boxes_per_image']['mean']:g} per image (max {data['boxes_per_image']['max']}); "
        f"box size p5/p50/p95 {size['p5']:.0f}/{size['p50']:.0f}/{size['p95']:.0f} px at "
        f"{data['input_size'][1]} px input ({data['small_box_share']:.0%} under 32 px); "
        f"best possible recall {check['best_possible_recall']:.3f}"
    )
