"""User-facing errors: one line naming the file or key, the problem and the fix."""


class DetflowError(Exception):
    """A problem the user can fix. Stage entry points print it as one line, no traceback."""


class ConfigError(DetflowError, ValueError):
    """A config value is missing, of the wrong type, or not one of the allowed values."""


class DataError(DetflowError):
    """An input file or dataset cannot be used as it is."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first non-empty line of ``exc``'s message (its type name when it has none), cut to
    ``limit`` characters: a library's multi-line message inside a one-line error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def require_choice(key: str, value, allowed) -> None:
    """Raise ConfigError naming ``key`` and the allowed values unless ``value`` is one of them."""
    if value not in allowed:
        choices = ", ".join(str(a) for a in allowed)
        raise ConfigError(f"{key}={value!r} is not allowed; use one of: {choices}")


def require_positive(key: str, value, *, allow_zero: bool = False, integer: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a number > 0 (or >= 0 with ``allow_zero``);
    with ``integer``, a whole number."""
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{key}={value!r} must be {kind} {bound}")
