"""TileSettings (detflow.core.tile_settings): checked on construction, a plain dict round
trip, None-safe; and the checkpoint's ``tiles`` read back by stored_tiles."""

import pytest

from detflow.core.errors import ConfigError
from detflow.core.tile_settings import TileSettings, tile_settings
from detflow.model.checkpoint_file import stored_tiles


def test_settings_round_trip_through_a_plain_dict():
    settings = TileSettings(512, 64, merge="wbf", iou=0.6, with_full_image=True, metric="iou")
    plain = settings.to_dict()
    assert plain == {
        "size": 512,
        "overlap": 64,
        "merge": "wbf",
        "iou": 0.6,
        "with_full_image": True,
        "metric": "iou",
    }
    assert TileSettings.from_dict(plain) == settings
    assert tile_settings(plain) == settings
    assert tile_settings(settings) is settings
    assert tile_settings(None) is None
    assert TileSettings.from_dict({"size": 416, "overlap": 40}) == TileSettings(416, 40)


@pytest.mark.parametrize(
    ("d", "match"),
    [
        ({"size": 512, "overlap": 512}, "tiles.overlap=512 must be smaller"),
        ({"size": 0, "overlap": 0}, "tiles.size=0"),
        ({"size": 512, "overlap": 64, "merge": "soft"}, "tiles.merge='soft' is not allowed"),
        ({"size": 512, "overlap": 64, "metric": "dice"}, "tiles.metric"),
        ({"size": 512, "overlap": 64, "iou": 1.5}, r"tiles.iou=1.5 must be in \(0, 1\]"),
        ({"size": 512, "overlap": 64, "stride": 3}, "tiles.stride is not a tiles option"),
        ({"overlap": 64}, "tiles.size is required"),
        ({"size": "512", "overlap": 64}, "tiles.size='512' must be an integer"),
    ],
)
def test_bad_settings_name_the_key(d, match):
    with pytest.raises(ConfigError, match=match):
        TileSettings.from_dict(d)


def test_stored_tiles_reads_the_checkpoint_key():
    assert stored_tiles({}) is None  # checkpoints written before tiles
    assert stored_tiles({"tiles": None}) is None
    assert stored_tiles({"tiles": {"size": 256, "overlap": 32}}) == TileSettings(256, 32)
