"""The ``postprocess.*`` options (:class:`PostprocessOptions`), shared by the PyTorch step
(:mod:`detflow.model.postprocess`) and the ONNX runtime path
(:mod:`detflow.deploy.onnx_postprocess`). Imports no torch.

Keys: ``score_threshold``, ``nms`` (``class_aware`` | ``class_agnostic``), ``nms_iou``,
``soft_nms`` (``none`` | ``gaussian`` | ``linear``), ``soft_nms_sigma`` and
``max_detections``; :mod:`detflow.model.postprocess` says what each does. Checkpoints store
them as a plain dict (``postprocess``), exported models as JSON (``detflow_postprocess``):
:meth:`PostprocessOptions.to_dict` and ``PostprocessOptions.from_config`` convert at those
boundaries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from detflow.core.errors import ConfigError, require_positive
from detflow.core.options import ConfigOptions

NMS_MODES = ("class_aware", "class_agnostic")
SOFT_NMS_METHODS = ("none", "gaussian", "linear")
# Keys added after the first checkpoints were written; a config without them (an older
# checkpoint's) means class-aware hard NMS, which is what those checkpoints did.
DEFAULTS = {"nms": "class_aware", "soft_nms": "none", "soft_nms_sigma": 0.5}
# Detections per image the detector hands on when the final step does the NMS itself.
CANDIDATES = 1000
AUTO = "auto"
DEFAULT_MAX_DETECTIONS = 100  # torchvision's; auto raises it to the densest image's boxes


@dataclass(frozen=True, kw_only=True)
class PostprocessOptions(ConfigOptions):
    """The validated ``postprocess.*``; the fields are in the config's (and the stored
    dicts') key order."""

    SECTION = "postprocess"

    score_threshold: float
    nms: str = field(default=DEFAULTS["nms"], metadata={"choices": NMS_MODES})
    nms_iou: float
    soft_nms: str = field(default=DEFAULTS["soft_nms"], metadata={"choices": SOFT_NMS_METHODS})
    soft_nms_sigma: float = DEFAULTS["soft_nms_sigma"]
    max_detections: int | str  # or auto: resolved by train (from the data), stored in checkpoints

    def check(self) -> None:
        require_positive("postprocess.score_threshold", self.score_threshold, allow_zero=True)
        require_positive("postprocess.nms_iou", self.nms_iou)
        for key in ("score_threshold", "nms_iou"):
            if getattr(self, key) > 1:
                raise ConfigError(f"postprocess.{key}={getattr(self, key)!r} must be <= 1")
        require_positive("postprocess.soft_nms_sigma", self.soft_nms_sigma)
        if self.max_detections != AUTO:
            require_positive("postprocess.max_detections", self.max_detections, integer=True)

    def with_max_detections(self, value: int) -> PostprocessOptions:
        """These options with ``max_detections`` resolved to ``value`` when it is ``auto``."""
        if self.max_detections != AUTO:
            return self
        return dataclasses.replace(self, max_detections=int(value))

    @property
    def detector_does_all(self) -> bool:
        """True when the detector's own class-aware hard NMS is the whole post-processing."""
        return self.nms == "class_aware" and self.soft_nms == "none"
