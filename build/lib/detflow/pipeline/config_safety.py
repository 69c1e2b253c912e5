"""Config safety: what a run config may name for Hydra to instantiate.

A Hydra ``_target_`` key makes ``hydra.utils.instantiate`` import and call whatever it names,
so a config from elsewhere (a shared params file, a ``-S`` override) could run any function.
detflow builds its objects itself (models by name, albumentations transforms by name), and a
``_target_`` in a run config may only name something in the project's own packages:
``detflow``, ``torchvision`` or ``albumentations``.
"""

from __future__ import annotations

from detflow.core.errors import ConfigError

ALLOWED_TARGET_PACKAGES = ("detflow", "torchvision", "albumentations")
TARGET_KEYS = ("_target_", "_partial_target_")


def check_targets(config, *, allowed: tuple[str, ...] = ALLOWED_TARGET_PACKAGES) -> None:
    """Raise ConfigError naming the key when any ``_target_`` in ``config`` (nested dicts and
    lists) is not a dotted name inside one of the ``allowed`` packages."""
    for key, target in _targets(config, ""):
        if not _allowed(target, allowed):
            packages = ", ".join(allowed)
            raise ConfigError(
                f"{key}={target!r} is not allowed: _target_ may only name a class or function "
                f"in {packages}; remove the key or use the project's config groups"
            )


def _targets(node, prefix: str):
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key in TARGET_KEYS:
                yield path, value
            else:
                yield from _targets(value, path)
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _targets(value, f"{prefix}[{index}]")


def _allowed(target, allowed: tuple[str, ...]) -> bool:
    if not isinstance(target, str):
        return False
    parts = target.split(".")
    return len(parts) > 1 and parts[0] in allowed and all(p.isidentifier() for p in parts)
