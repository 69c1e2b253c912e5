"""The export settings the export tests share: two named images, classes cat and dog, opset
17 and the default parity tolerances (1 px, 1e-3 score)."""

TINY_EXPORT = {
    "names": ["a", "b"],
    "class_names": ["cat", "dog"],
    "config": {},
    "opset": 17,
    "max_box_error_px": 1.0,
    "max_score_error": 1e-3,
}
