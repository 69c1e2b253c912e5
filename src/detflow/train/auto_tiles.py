"""``model.tiles``: train on tiles cut from the full-resolution images, or on whole images.

``auto`` (the default) tiles when objects would sit below what the model's strides match
even at the largest affordable input (:data:`~detflow.train.auto_model.LARGER_INPUTS`'
largest, 640 px, where ``model.min_size`` is ``auto``): more than a quarter of the boxes
under :data:`MIN_OBJECT_PX` there (:func:`detflow.data.tiles.choose_tiles`). The tile is then
the model's input (416 px for ``auto``, or ``model.min_size``): it enters the model without
downscaling; the overlap is the p99 of the boxes' longer side (at most half a tile), so
nearly every box lies whole in some tile. On data whose objects are large enough ``auto``
picks no tiles and nothing changes. ``off`` never tiles; ``{size, overlap}`` (pixels) sets
them.

Tiles are cut per split (train only; val and test are predicted sliced, whole images in,
COCO metrics on their original boxes): a box cut by a tile edge keeps its clipped part when
at least :data:`MIN_VISIBLE` of it is visible, else it is carried as ignored; empty tiles
are kept at :data:`EMPTY_RATE` (:mod:`detflow.data.tile_dataset`).
"""

from __future__ import annotations

from detflow.core.errors import ConfigError
from detflow.data.tiles import TileSpec, box_and_image_sizes, check_tiles, choose_tiles
from detflow.model.build import AUTO, DEFAULT_INPUT_SIZE
from detflow.train.auto_model import LARGER_INPUTS

# sqrt(w·h) at the input under which a box is small for the default FCOS: two strides of its
# finest level (8 px), where a box holds about one feature location inside FCOS's centre
# radius; choose_tiles tiles when more than a quarter of the boxes are under it.
MIN_OBJECT_PX = 16.0
MIN_VISIBLE = 0.5  # a cut box keeps its clipped part at this share visible, else ignored
EMPTY_RATE = 0.1  # tiles without a box kept for training (background), drawn by the seed


def resolve_tiles(tiles, *, min_size, dataset: dict) -> tuple[TileSpec | None, dict]:
    """``model.tiles`` for ``dataset`` (the train split): the tile size and overlap, or None
    (whole images), and the choice ``{"value", "reason"}`` (see the module doc)."""
    if tiles in ("off", None, False):
        return None, {"value": "off", "reason": "model.tiles=off"}
    if isinstance(tiles, dict):
        if set(tiles) != {"size", "overlap"}:
            raise ConfigError(
                f"model.tiles={tiles!r}: set exactly size and overlap (pixels), e.g. "
                "{size: 512, overlap: 64}; or auto, or off"
            )
        spec = check_tiles(size=tiles["size"], overlap=tiles["overlap"])
        return spec, {"value": _value(spec), "reason": "model.tiles is set"}
    if tiles != AUTO:
        raise ConfigError(
            f"model.tiles={tiles!r} is not allowed; use auto, off or {{size, overlap}}"
        )
    base = DEFAULT_INPUT_SIZE if min_size == AUTO else int(min_size)
    largest = max(LARGER_INPUTS[-1], base) if min_size == AUTO else base
    sizes, images = box_and_image_sizes(dataset)
    spec, largest_reason = choose_tiles(
        sizes, images, min_size=largest, max_size=largest, min_object_px=MIN_OBJECT_PX
    )
    at_largest = f"at the largest input, {largest} px, "
    if spec is None:
        return None, {"value": "off", "reason": at_largest + largest_reason}
    spec, reason = choose_tiles(
        sizes, images, min_size=base, max_size=base, min_object_px=MIN_OBJECT_PX
    )
    if spec is None:
        return None, {"value": "off", "reason": f"at the {base} px input, {reason}"}
    seen = largest_reason.split(": tiles of")[0]
    return spec, {"value": _value(spec), "reason": f"{at_largest}{seen}; at {base} px, {reason}"}


def _value(spec: TileSpec) -> dict:
    return {"size": spec.size, "overlap": spec.overlap}
