"""The one way config becomes options (detflow.core.options): unknown keys, types, allowed
values and required keys, each with one wording that names the key."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from detflow.core.errors import ConfigError, require_positive
from detflow.core.options import ConfigOptions, describe, options_from_config


@dataclass(frozen=True, kw_only=True)
class Toy(ConfigOptions):
    SECTION = "toy"

    size: int
    rate: float = 0.5
    name: str = "a"
    mode: str = field(default="fast", metadata={"choices": ("fast", "slow")})
    flag: bool = False
    limit: float | None = None
    tags: list[str] = field(default_factory=list)
    steps: tuple[int, ...] = ()
    extra: dict = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list, metadata={"choices": ("x", "y")})
    pixels: int = field(default=100, metadata={"key": "limits.pixels"})

    def check(self) -> None:
        require_positive("toy.size", self.size, integer=True)


def test_values_are_kept_defaults_filled_and_lists_become_tuples_for_tuple_fields():
    toy = Toy.from_config({"size": 3, "rate": 2, "steps": [1, 2], "tags": ["p"]})
    assert toy == Toy(size=3, rate=2, steps=(1, 2), tags=["p"])
    assert toy.rate == 2 and isinstance(toy.rate, int)  # an int is a number: kept as given
    assert toy.steps == (1, 2) and toy.name == "a" and toy.limit is None
    assert Toy.from_config({"size": 1, "limit": None}).limit is None  # None for optional
    assert Toy.from_config({"size": 1, "limit": 3}).limit == 3
    assert options_from_config(Toy, {"size": 4}) == Toy(size=4)


def test_unknown_key_names_the_key_and_every_allowed_one():
    with pytest.raises(ConfigError) as caught:
        Toy.from_config({"size": 1, "sise": 2})
    assert str(caught.value) == (
        "toy.sise is not a toy option; allowed: extra, flag, kinds, limit, mode, name, rate, "
        "size, steps, tags"
    )
    with pytest.raises(ConfigError, match="toy.pixels is not a toy option"):
        Toy.from_config({"size": 1, "pixels": 5})  # comes from limits.*, not from toy.*


def test_a_missing_required_key_is_named():
    with pytest.raises(ConfigError, match=r"^toy.size is required; set toy.size=VALUE$"):
        Toy.from_config({"rate": 1.0})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("size", "ten", "toy.size='ten' must be an integer"),
        ("size", 2.5, "toy.size=2.5 must be an integer"),
        ("size", True, "toy.size=True must be an integer"),
        ("rate", "fast", "toy.rate='fast' must be a number"),
        ("rate", False, "toy.rate=False must be a number"),
        ("name", 3, "toy.name=3 must be a string"),
        ("flag", "yes", "toy.flag='yes' must be true or false"),
        ("flag", 1, "toy.flag=1 must be true or false"),
        ("limit", "none", "toy.limit='none' must be a number or null"),
        ("tags", "p", "toy.tags='p' must be a list of strings"),
        ("tags", ["p", 3], r"toy.tags=\['p', 3\] must be a list of strings"),
        ("steps", [1, "2"], r"toy.steps=\[1, '2'\] must be a list of integers"),
        ("extra", [1], r"toy.extra=\[1\] must be a mapping"),
        ("size", None, "toy.size=None must be an integer"),
    ],
)
def test_a_wrong_type_names_the_key_the_value_and_the_expected_type(key, value, message):
    config = {"size": 1, key: value}
    with pytest.raises(ConfigError, match=f"^{message}$"):
        Toy.from_config(config)


def test_a_value_outside_the_choices_names_the_allowed_values():
    with pytest.raises(
        ConfigError, match=r"^toy.mode='quick' is not allowed; use one of: fast, slow$"
    ):
        Toy.from_config({"size": 1, "mode": "quick"})
    with pytest.raises(ConfigError, match=r"^toy.kinds='z' is not allowed; use one of: x, y$"):
        Toy.from_config({"size": 1, "kinds": ["x", "z"]})  # each item of a list


def test_fields_from_outside_the_section_are_keywords_named_by_their_own_key():
    assert Toy.from_config({"size": 1}, pixels=7).pixels == 7
    with pytest.raises(ConfigError, match=r"^limits.pixels='many' must be an integer$"):
        Toy.from_config({"size": 1}, pixels="many")
    with pytest.raises(TypeError, match="unexpected arguments"):
        Toy.from_config({"size": 1}, size=2)  # a section key is not a keyword


def test_direct_construction_is_checked_the_same_way_and_ranges_by_check():
    with pytest.raises(ConfigError, match="^toy.rate='x' must be a number$"):
        Toy(size=1, rate="x")
    with pytest.raises(ConfigError, match="^toy.size=0 must be an integer > 0$"):
        Toy(size=0)
    assert Toy(size=1, steps=[3]).steps == (3,)


def test_the_section_must_be_a_mapping_and_to_dict_gives_its_keys_in_order():
    with pytest.raises(ConfigError, match=r"^toy must be a mapping of toy options, not \[1\]$"):
        Toy.from_config([1])
    keys = list(Toy(size=1).to_dict())
    assert keys[:3] == ["size", "rate", "name"] and "pixels" not in keys


def test_describe_words_the_expected_type():
    assert describe(int) == "an integer"
    assert describe(float | None) == "a number or null"
    assert describe(list[dict]) == "a list of mappings"
    assert describe(tuple[int, ...]) == "a list of integers"
    assert describe(dict[int, int] | None) == "a mapping or null"
