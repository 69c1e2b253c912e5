"""The shared ``postprocess.*`` config: one post-processing for evaluate, export parity and
predict.

:func:`model_kwargs` maps the config to the detector's own settings (score threshold, NMS IoU,
detections per image) for :func:`detflow.models.build_model`.
"""

from __future__ import annotations

from detflow.errors import require_positive


def model_kwargs(postprocess: dict) -> dict:
    """``build_model`` keyword arguments from a ``postprocess.*`` mapping."""
    require_positive("postprocess.max_detections", postprocess["max_detections"])
    return {
        "score_threshold": float(postprocess["score_threshold"]),
        "nms_iou": float(postprocess["nms_iou"]),
        "max_detections": int(postprocess["max_detections"]),
    }
