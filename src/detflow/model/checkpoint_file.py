"""Checkpoints: plain dicts of tensors and primitives, loaded with ``weights_only=True``.

Keys: ``schema``, ``model_state``, ``model`` (builder config), ``postprocess`` (the
:class:`detflow.model.postprocess_config.PostprocessOptions` as a plain dict),
``class_names``, ``tiles`` (the :class:`detflow.core.tile_settings.TileSettings` as a plain
dict; None or absent: the model sees whole images), ``config`` (the whole resolved run
config), ``epoch``, ``metrics`` (that epoch's), ``history`` (every epoch's metrics so far);
training state for resuming:
``optimizer_state``, ``scheduler_state``, ``scaler_state`` (AMP; ``{}`` without),
``train_state`` (best val mAP50 and its epoch, the early-stopping count) and ``rng_state``
(:func:`detflow.core.seeding.get_state`: Python, NumPy, torch and DataLoader generators).
``best.pt`` and ``last.pt`` hold the same keys.
"""

from __future__ import annotations

from pathlib import Path

import torch

from detflow.core.errors import DetflowError, first_line
from detflow.core.files import atomic_file
from detflow.core.tile_settings import TileSettings, tile_settings
from detflow.model.postprocess_config import PostprocessOptions

SCHEMA = "detflow-checkpoint-v1"


def save_checkpoint(state: dict, path: str | Path) -> None:
    """``torch.save`` atomically (temp file + rename)."""
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str | Path, *, device="cpu") -> dict:
    """The checkpoint's dict (``weights_only=True``), checked to be a detflow checkpoint."""
    path = Path(path)
    if not path.exists():
        raise DetflowError(f"{path}: checkpoint not found; run the train stage first")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise DetflowError(
            f"{path}: not a loadable checkpoint ({first_line(exc)}); only tensors and plain "
            "values are loaded (weights_only=True), never pickled objects; re-run train"
        ) from exc
    if not isinstance(state, dict) or state.get("schema") != SCHEMA:
        raise DetflowError(f"{path}: not a detflow checkpoint ({SCHEMA})")
    return state


def stored_postprocess(state: dict) -> PostprocessOptions:
    """The post-processing a checkpoint was trained with, from its plain ``postprocess``
    dict (keys added since an older checkpoint was written take their defaults)."""
    return PostprocessOptions.from_config(state["postprocess"])


def stored_tiles(state: dict) -> TileSettings | None:
    """The sliced-inference settings a checkpoint was trained with (its ``tiles`` dict), or
    None when it has none (absent or None: whole images)."""
    return tile_settings(state.get("tiles"))


def resolve_postprocess(postprocess: PostprocessOptions, state: dict) -> PostprocessOptions:
    """``postprocess`` with an ``auto`` ``max_detections`` taken from the checkpoint (train
    resolved it from the data)."""
    return postprocess.with_max_detections(stored_postprocess(state).max_detections)


def check_classes(trained: list[str], dataset: list[str], *, where: str | Path) -> None:
    """Raise DetflowError unless ``dataset``'s class names equal the model's, in order:
    category ids would otherwise mean other classes and every metric would be wrong."""
    if list(trained) != list(dataset):
        raise DetflowError(
            f"{where}: classes {list(dataset)} differ from the model's {list(trained)}; "
            "rerun the pipeline from split (dvc repro) so both come from one dataset"
        )
