"""The validated ``serve.*``: models and their traffic shares, batching, limits and logs.

Read from a YAML file (``detflow serve --config serve.yaml``, its ``serve:`` mapping) and/or
CLI flags; every key is checked like a stage's options (:mod:`detflow.core.options`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from detflow.core.errors import ConfigError, require_positive
from detflow.core.images import DEFAULT_MAX_PIXELS
from detflow.core.options import ConfigOptions

MODEL_KEYS = ("name", "path", "share", "shadow")


@dataclass(frozen=True)
class ModelSpec:
    """One served model: ``name`` (metric label), ``path`` (ONNX file or its folder),
    ``share`` of the traffic (ignored for a shadow), ``shadow``: runs on mirrored traffic,
    its result never returned."""

    name: str
    path: str
    share: float = 1.0
    shadow: bool = False


@dataclass(frozen=True)
class ServeOptions(ConfigOptions):
    """``models``: a list of ``{name, path, share, shadow}`` (default: ``models/deploy``);
    ``max_batch`` images or ``max_wait_ms`` per worker run; ``queue_size`` waiting images per
    model (then 503 with ``Retry-After``); ``sessions`` ONNX Runtime sessions per model, each
    on its own worker thread with ``threads`` threads (0: the cores shared out among them);
    ``max_upload_mb`` and ``max_pixels`` per image;
    ``reload_interval_s`` between checks of the model files (0: no hot reload);
    ``request_log``: JSON Lines file (rotated at ``log_max_mb``, ``log_backups`` kept);
    drift against the model's ``reference.json`` over the last ``drift_window`` images (from
    ``drift_min_images`` on), a warning when a PSI exceeds ``drift_threshold``."""

    SECTION = "serve"

    host: str = "127.0.0.1"
    port: int = 8000
    models: list[dict] = field(
        default_factory=lambda: [{"name": "deploy", "path": "models/deploy"}]
    )
    provider: str = field(default="cpu", metadata={"choices": ("cpu", "cuda", "tensorrt")})
    threads: int = 0
    sessions: int = 1
    max_batch: int = 8
    max_wait_ms: float = 2.0
    queue_size: int = 64
    max_upload_mb: float = 10.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    reload_interval_s: float = 2.0
    request_log: str | None = "logs/serve/requests.jsonl"
    log_max_mb: float = 50.0
    log_backups: int = 5
    client_header: str = "X-Client-Id"
    drift_window: int = 500
    drift_min_images: int = 50
    drift_threshold: float = 0.25

    def check(self) -> None:
        for key in ("max_batch", "queue_size", "max_pixels", "port", "drift_window", "sessions"):
            require_positive(f"serve.{key}", getattr(self, key), integer=True)
        require_positive("serve.threads", self.threads, allow_zero=True, integer=True)
        require_positive("serve.log_backups", self.log_backups, allow_zero=True, integer=True)
        for key in ("max_wait_ms", "reload_interval_s"):
            require_positive(f"serve.{key}", getattr(self, key), allow_zero=True)
        require_positive("serve.drift_min_images", self.drift_min_images, integer=True)
        for key in ("max_upload_mb", "log_max_mb", "drift_threshold"):
            require_positive(f"serve.{key}", getattr(self, key))
        specs = self.model_specs()
        if not any(not spec.shadow for spec in specs):
            raise ConfigError("serve.models: at least one model must not be a shadow")
        if sum(spec.share for spec in specs if not spec.shadow) <= 0:
            raise ConfigError("serve.models: the shares of the non-shadow models sum to 0")

    def model_specs(self) -> list[ModelSpec]:
        """``models`` as :class:`ModelSpec` s; ConfigError names the entry at fault."""
        if not self.models:
            raise ConfigError("serve.models is empty; list at least one {name, path}")
        specs, names = [], set()
        for index, entry in enumerate(self.models):
            key = f"serve.models[{index}]"
            unknown = sorted(set(entry) - set(MODEL_KEYS))
            if unknown or "path" not in entry:
                raise ConfigError(
                    f"{key}={entry!r}: needs path; allowed keys: {', '.join(MODEL_KEYS)}"
                )
            name = str(entry.get("name") or Path(str(entry["path"])).stem)
            if name in names:
                raise ConfigError(f"{key}: the name {name!r} is used twice")
            names.add(name)
            share = entry.get("share", 1.0)
            if isinstance(share, bool) or not isinstance(share, int | float) or share < 0:
                raise ConfigError(f"{key}.share={share!r} must be a number >= 0")
            shadow = entry.get("shadow", False)
            if not isinstance(shadow, bool):
                raise ConfigError(f"{key}.shadow={shadow!r} must be true or false")
            specs.append(ModelSpec(name, str(entry["path"]), float(share), shadow))
        return specs


def load_options(path: str | Path | None = None, **overrides) -> ServeOptions:
    """The options from the ``serve:`` mapping of the YAML file at ``path`` (when given), then
    ``overrides`` (keys whose value is None are left as they are)."""
    mapping: dict = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the serve config ({exc})") from exc
        if not isinstance(loaded, dict) or not isinstance(loaded.get("serve", {}), dict):
            raise ConfigError(f"{path}: expected a mapping with a 'serve:' mapping in it")
        mapping = dict(loaded.get("serve", {}))
    mapping.update({key: value for key, value in overrides.items() if value is not None})
    return ServeOptions.from_config(mapping)
