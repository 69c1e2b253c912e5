"""The sliced-inference settings a trained model carries (:class:`TileSettings`).

Train chooses them (``model.tiles``) and writes ``TileSettings.to_dict()`` into the
checkpoint (``state["tiles"]``; None or absent: whole images); evaluate, the export parity
gate and the exported model's ``detflow_tiles`` metadata (read by the ONNX Runtime and
OpenVINO detectors) take them from there. Plain values only, no NumPy, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from detflow.core.errors import ConfigError, require_positive
from detflow.core.options import ConfigOptions
from detflow.core.tile_grid import check_tiles

MERGES = ("nms", "wbf")  # detflow.core.tile_merge
METRICS = ("ios", "iou")


@dataclass(frozen=True)
class TileSettings(ConfigOptions):
    """Square tiles of ``size`` px with at least ``overlap`` px between neighbours
    (:func:`detflow.core.tile_grid.tile_windows`), merged across tiles by ``merge`` (``nms``
    | ``wbf``) above ``iou`` on ``metric`` (``ios``: intersection over the smaller box |
    ``iou``); ``with_full_image`` adds the whole image downscaled to ``size`` as one more
    view. See :func:`detflow.core.slicing.sliced_predict`."""

    SECTION = "tiles"

    size: int
    overlap: int
    merge: str = field(default="nms", metadata={"choices": MERGES})
    iou: float = 0.5
    with_full_image: bool = False
    metric: str = field(default="ios", metadata={"choices": METRICS})

    def check(self) -> None:
        check_tiles(size=self.size, overlap=self.overlap)
        require_positive("tiles.iou", self.iou)
        if self.iou > 1:
            raise ConfigError(f"tiles.iou={self.iou!r} must be in (0, 1]")

    @classmethod
    def from_dict(cls, d: Mapping) -> TileSettings:
        """The settings from their plain dict (:meth:`to_dict`); ConfigError names the key
        at fault (``tiles.<key>``)."""
        return cls.from_config(d)


def tile_settings(d: Mapping | TileSettings | None) -> TileSettings | None:
    """None for None (whole images), else :meth:`TileSettings.from_dict` of ``d`` (a
    :class:`TileSettings` is returned as it is)."""
    if d is None or isinstance(d, TileSettings):
        return d
    return TileSettings.from_dict(d)
