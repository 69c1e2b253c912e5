import json
import math

import pytest

from detflow.core.files import json_text


def test_expand_depth_lays_out_records_one_per_line_and_parses_back():
    value = {
        "images": [{"id": 1, "size": [4, 3], "name": "é"}, {"id": 2, "size": [5, 6]}],
        "empty": {},
        "none": [],
        "x": 1.5,
    }
    text = json_text(value, expand_depth=2)
    assert json.loads(text) == value
    assert text.splitlines() == [
        "{",
        '  "images": [',
        '    {"id": 1, "size": [4, 3], "name": "\\u00e9"},',
        '    {"id": 2, "size": [5, 6]}',
        "  ],",
        '  "empty": {},',
        '  "none": [],',
        '  "x": 1.5',
        "}",
    ]
    assert json_text(value) == json.dumps(value, indent=2)


def test_keys_are_written_as_the_json_module_writes_them():
    value = {"a": {3: "x", False: "y", None: "z", 2.5: "w"}}
    assert json.loads(json_text(value, expand_depth=2)) == json.loads(json.dumps(value))


@pytest.mark.parametrize("depth", [None, 0, 2])
def test_nan_is_refused_at_any_depth(depth):
    with pytest.raises(ValueError):
        json_text({"a": [{"b": math.nan}]}, expand_depth=depth)
