"""Checkpoints: plain dicts of tensors and primitives, loaded with ``weights_only=True``.

Keys: ``schema``, ``model_state``, ``model`` (builder config), ``postprocess``,
``class_names``, ``config`` (the whole resolved run config), ``epoch``, ``metrics`` (that
epoch's), ``history`` (every epoch's metrics so far); training state for resuming:
``optimizer_state``, ``scheduler_state``, ``scaler_state`` (AMP; ``{}`` without),
``train_state`` (best val mAP50 and its epoch, the early-stopping count) and ``rng_state``
(:func:`detflow.rng.get_state`: Python, NumPy, torch and DataLoader generators).
``best.pt`` and ``last.pt`` hold the same keys.
"""

from __future__ import annotations

from pathlib import Path

import torch

from detflow.errors import DetflowError, first_line
from detflow.files import atomic_file
from detflow.models import build_model, is_pretrained
from detflow.postprocess import model_kwargs

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


def load_checkpoint(path: str | Path, *, postprocess: dict | None = None, device="cpu"):
    """Rebuild the model from a checkpoint (``weights_only=True``); returns (model, state).

    The model is built offline (no weights downloaded or read) with the structure it was
    trained with, then the checkpoint's weights are loaded into it.
    """
    state = read_checkpoint(path, device=device)
    model_config = {**state["model"], "weights": "none", "backbone_weights": "none"}
    model = build_model(
        **model_config,
        num_classes=len(state["class_names"]),
        frozen_norm=is_pretrained(state["model"]),
        **model_kwargs(postprocess or state["postprocess"]),
    )
    model.load_state_dict(state["model_state"])
    model.to(device).eval()
    return model, state


def check_classes(trained: list[str], dataset: list[str], *, where: str | Path) -> None:
    """Raise DetflowError unless ``dataset``'s class names equal the model's, in order:
    category ids would otherwise mean other classes and every metric would be wrong."""
    if list(trained) != list(dataset):
        raise DetflowError(
            f"{where}: classes {list(dataset)} differ from the model's {list(trained)}; "
            "rerun the pipeline from split (dvc repro) so both come from one dataset"
        )
