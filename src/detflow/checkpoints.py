"""Checkpoints: plain dicts of tensors and primitives, loaded with ``weights_only=True``.

Keys: ``schema``, ``model_state``, ``model`` (builder config), ``postprocess``,
``class_names``, ``config`` (the whole resolved run config), ``epoch`` and ``metrics``;
``last.pt`` also holds ``optimizer_state`` and ``scheduler_state``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from detflow.errors import DetflowError
from detflow.files import atomic_file
from detflow.models import build_model
from detflow.postprocess import model_kwargs

SCHEMA = "detflow-checkpoint-v1"


def save_checkpoint(state: dict, path: str | Path) -> None:
    """``torch.save`` atomically (temp file + rename)."""
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, *, postprocess: dict | None = None, device="cpu"):
    """Rebuild the model from a checkpoint (``weights_only=True``); returns (model, state)."""
    path = Path(path)
    if not path.exists():
        raise DetflowError(f"{path}: checkpoint not found; run the train stage first")
    state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict) or state.get("schema") != SCHEMA:
        raise DetflowError(f"{path}: not a detflow checkpoint ({SCHEMA})")
    model_config = {**state["model"], "backbone_weights": "none"}
    model = build_model(
        **model_config,
        num_classes=len(state["class_names"]),
        **model_kwargs(postprocess or state["postprocess"]),
    )
    model.load_state_dict(state["model_state"])
    model.eval()
    return model, state
