"""Settings the export tests share: two named images, classes cat and dog, opset 17 and the
default parity tolerances (1 px, 1e-3 score); and the default post-processing config."""

from detflow.deploy.export import ExportOptions

POSTPROCESS_DEFAULT = {  # conf/config.yaml postprocess.*
    "score_threshold": 0.05,
    "nms": "class_aware",
    "nms_iou": 0.5,
    "soft_nms": "none",
    "soft_nms_sigma": 0.5,
    "max_detections": 100,
}

TINY_EXPORT = {
    "names": ["a", "b"],
    "class_names": ["cat", "dog"],
    "config": {},
    "options": ExportOptions(opset=17, max_box_error_px=1.0, max_score_error=1e-3),
}
