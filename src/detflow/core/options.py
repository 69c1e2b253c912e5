"""Typed options: one way from a config section to a validated, frozen dataclass.

Every stage builds one options object (a frozen dataclass deriving from
:class:`ConfigOptions`) with ``X.from_config(cfg[section])`` and hands it to the library,
which trusts it. The checks and their wording are shared (:func:`options_from_config`):

- an unknown key: ``section.key is not a section option; allowed: a, b, c``;
- a missing key without a default: ``section.key is required; set section.key=VALUE``;
- a value of the wrong type, from the field's annotation (``bool``, ``int``, ``float`` (an
  int is accepted, kept as given), ``str``, ``list[X]``/``tuple[X, ...]`` (a tuple field
  gets a tuple), ``dict``, ``X | None``): ``section.key=VALUE must be EXPECTED``;
- a value outside the field's ``metadata={"choices": (...)}`` (for a list: each item):
  :func:`detflow.core.errors.require_choice`.

Numeric ranges and checks across keys go in the subclass's :meth:`ConfigOptions.check`
(with :func:`detflow.core.errors.require_positive`). A field with ``metadata={"key":
"limits.max_pixels"}`` comes from elsewhere in the config: it is not a key of the section,
``from_config`` takes it as a keyword argument and errors name it by that key. Direct
construction (``X(key=value)``) is validated the same way, from ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml

from detflow.core.errors import ConfigError, require_choice

_HINTS: dict[type, dict[str, Any]] = {}
_NOUNS = {
    bool: ("true or false", "true/false values"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    dict: ("a mapping", "mappings"),
}


class ConfigOptions:
    """Base of the frozen options dataclasses; ``SECTION`` is their config section."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_fields(self)
        self.check()

    def check(self) -> None:
        """Ranges and checks across keys (types and allowed values are already checked)."""

    @classmethod
    def from_config(cls, mapping: Mapping, **outside):
        """The options from the ``SECTION`` mapping of the config (plus the fields that come
        from elsewhere, by keyword); ConfigError names the key at fault."""
        return options_from_config(cls, mapping, **outside)

    def to_dict(self) -> dict:
        """The section's keys and values, in field order (what the config would hold)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if "key" not in f.metadata
        }


def options_from_config(cls: type[ConfigOptions], mapping: Mapping, **outside) -> ConfigOptions:
    """``cls`` (a :class:`ConfigOptions` dataclass) built from ``mapping``, its config section,
    and ``outside``: values of the fields marked ``metadata={"key": …}``. Unknown keys and
    missing required ones are a ConfigError; types and choices are checked on construction."""
    section = cls.SECTION
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{section} must be a mapping of {section} options, not {mapping!r}")
    fields = dataclasses.fields(cls)
    own = sorted(f.name for f in fields if "key" not in f.metadata)
    for key in mapping:
        if key not in own:
            raise ConfigError(
                f"{section}.{key} is not a {section} option; allowed: {', '.join(own)}"
            )
    extra = sorted(set(outside) - {f.name for f in fields if "key" in f.metadata})
    if extra:
        raise TypeError(f"{cls.__name__}.from_config() got unexpected arguments {extra}")
    values = {}
    for f in fields:
        given = outside if "key" in f.metadata else mapping
        if f.name in given:
            values[f.name] = given[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            key = config_key(cls, f)
            raise ConfigError(f"{key} is required; set {key}=VALUE")
    return cls(**values)


def config_key(cls, f: dataclasses.Field) -> str:
    """The config key of field ``f`` of options class ``cls``: ``SECTION.name``, or the
    field's own ``metadata["key"]``."""
    return f.metadata.get("key") or f"{cls.SECTION}.{f.name}"


def check_fields(options: ConfigOptions) -> None:
    """Check every field of ``options`` against its annotation and ``choices``; a tuple
    field given a list gets the tuple."""
    cls = type(options)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        key, value = config_key(cls, f), getattr(options, f.name)
        checked = check_value(key, value, hints[f.name])
        choices = f.metadata.get("choices")
        if choices is not None and checked is not None:
            for item in checked if isinstance(checked, list | tuple) else [checked]:
                require_choice(key, item, choices)
        if checked is not value:
            object.__setattr__(options, f.name, checked)


def check_value(key: str, value, annotation):
    """``value`` if it is of type ``annotation`` (a tuple for a tuple annotation), else a
    ConfigError: ``key=value must be <expected>``."""
    if not _matches(value, annotation):
        text = repr(value)
        text = text if len(text) <= 80 else text[:79] + "…"
        raise ConfigError(f"{key}={text} must be {describe(annotation)}")
    if typing.get_origin(annotation) is tuple and isinstance(value, list):
        return tuple(value)
    return value


def describe(annotation) -> str:
    """The expected type in words: ``an integer``, ``a list of strings``, ``a number or null``."""
    options = _union(annotation)
    if options is not None:
        words = [describe(a) for a in options if a is not type(None)]
        return " or ".join(words + (["null"] if type(None) in options else []))
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(str(v) for v in typing.get_args(annotation))
    origin = typing.get_origin(annotation) or annotation
    if origin in (list, tuple):
        item = _item_type(annotation)
        plural = _NOUNS.get(typing.get_origin(item) or item, (None, None))[1]
        return f"a list of {plural}" if plural else "a list"
    if origin in _NOUNS:
        return _NOUNS[origin][0]
    return getattr(origin, "__name__", str(origin))


def _matches(value, annotation) -> bool:
    if annotation is Any or annotation is object:
        return True
    options = _union(annotation)
    if options is not None:
        return any(_matches(value, a) for a in options)
    if annotation is type(None):
        return value is None
    if typing.get_origin(annotation) is typing.Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(annotation))
    origin = typing.get_origin(annotation) or annotation
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin in (list, tuple):
        item = _item_type(annotation)
        return isinstance(value, list | tuple) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, Mapping)
    return isinstance(value, origin)


def _union(annotation) -> tuple | None:
    """The members of a ``X | Y`` (or ``Optional``) annotation, else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return None


def _item_type(annotation):
    """``X`` of ``list[X]`` or ``tuple[X, ...]``; Any when not given."""
    args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
    return args[0] if args else Any


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def read_params(path: str | Path) -> dict:
    """The composed config at ``path`` (``params.yaml``, as ``make params`` writes it), read
    with ``yaml.safe_load``; ConfigError naming the file when it is missing or not a mapping."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc}); run `make params`") from exc
    if not isinstance(loaded, dict) or not isinstance(loaded.get("paths"), dict):
        raise ConfigError(f"{path}: not a composed detflow config (no paths: mapping)")
    return loaded
