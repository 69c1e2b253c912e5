"""The shared ``postprocess.*`` step: one post-processing for evaluate, export parity and
predict, configured by :class:`detflow.model.postprocess_config.PostprocessOptions`.

Keys: ``score_threshold`` (detections scoring below it are dropped, after any soft-NMS decay),
``nms`` (``class_aware``: a box suppresses only boxes of its own class; ``class_agnostic``:
boxes of any class), ``nms_iou`` (hard NMS: the IoU above which the lower-scored box is
dropped; linear soft-NMS: the IoU above which its score decays), ``soft_nms`` (``none``: hard
NMS; ``gaussian``: scores × exp(-IoU²/sigma); ``linear``: scores × (1 - IoU)),
``soft_nms_sigma`` (gaussian only) and ``max_detections`` (per image, best scores first).

:func:`model_kwargs` maps the options to the detector's own settings for
:func:`detflow.model.build.build_model`; :func:`apply_postprocess` is the final step every caller
applies to the detector's output. With the default (class-aware hard NMS) the detector does
all of it and the final step changes nothing; otherwise the detector's own NMS is switched
off so that the final step sees every candidate.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import batched_nms, nms

from detflow.core.nms import separate_classes, soft_nms
from detflow.model.postprocess_config import CANDIDATES, DEFAULT_MAX_DETECTIONS, PostprocessOptions


def model_kwargs(postprocess: PostprocessOptions) -> dict:
    """``build_model`` keyword arguments (score_threshold, nms_iou, max_detections) from the
    ``postprocess.*`` options.

    For class-agnostic or soft NMS the detector's NMS is switched off (IoU 1.0) and it keeps
    up to :data:`CANDIDATES` detections, so that :func:`apply_postprocess` sees them all.
    An ``auto`` ``max_detections`` not yet resolved from the data (by train) is the default.
    """
    postprocess = postprocess.with_max_detections(DEFAULT_MAX_DETECTIONS)
    if postprocess.detector_does_all:
        nms_iou, max_detections = postprocess.nms_iou, postprocess.max_detections
    else:
        nms_iou, max_detections = 1.0, max(int(postprocess.max_detections), CANDIDATES)
    return {
        "score_threshold": float(postprocess.score_threshold),
        "nms_iou": float(nms_iou),
        "max_detections": int(max_detections),
    }


def apply_postprocess(boxes, scores, labels, *, config: PostprocessOptions) -> dict:
    """Score threshold, NMS (hard or soft, class-aware or not) and top-k on one image.

    ``boxes``: ``[N, 4]`` ``xyxy`` pixels; ``scores``: ``[N]``; ``labels``: ``[N]`` int.
    Torch tensors or numpy arrays; returns ``{"boxes", "labels", "scores"}`` of the same
    kind, best score first. Pure: the inputs are not changed.
    """
    as_numpy = not isinstance(boxes, torch.Tensor)
    boxes = torch.as_tensor(np.asarray(boxes) if as_numpy else boxes).reshape(-1, 4)
    scores, labels = torch.as_tensor(scores).reshape(-1), torch.as_tensor(labels).reshape(-1)
    boxes, scores = boxes.to(torch.float32), scores.to(torch.float32)
    # label 0 is background: one-stage heads (RetinaNet, FCOS) can still emit it
    keep = torch.nonzero((scores >= config.score_threshold) & (labels >= 1)).flatten()
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    class_aware = config.nms == "class_aware"
    if config.soft_nms == "none" and class_aware:
        keep = batched_nms(boxes, scores, labels, config.nms_iou)
    elif config.soft_nms == "none":
        keep = nms(boxes, scores, config.nms_iou)
    else:
        keep, scores = _soft_nms(boxes, scores, labels if class_aware else None, config)
    keep = keep[: int(config.max_detections)]
    out = {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}
    return {k: v.numpy() for k, v in out.items()} if as_numpy else out


def _soft_nms(boxes, scores, labels, config: PostprocessOptions):
    """:func:`detflow.core.nms.soft_nms` (NumPy: the one soft-NMS, shared with the ONNX
    runtime) on torch tensors; ``labels`` None = class-agnostic."""
    numpy_boxes = boxes.detach().cpu().numpy()
    if labels is not None:
        numpy_boxes = separate_classes(numpy_boxes, labels.detach().cpu().numpy())
    keep, decayed = soft_nms(
        numpy_boxes,
        scores.detach().cpu().numpy(),
        method=config.soft_nms,
        sigma=float(config.soft_nms_sigma),
        iou_threshold=float(config.nms_iou),
        score_threshold=float(config.score_threshold),
        max_detections=int(config.max_detections),
    )
    return torch.from_numpy(keep).to(boxes.device), torch.from_numpy(decayed).to(scores.device)
