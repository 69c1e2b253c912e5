"""A model rebuilt from a checkpoint file (:mod:`detflow.model.checkpoint_file`)."""

from __future__ import annotations

from pathlib import Path

from detflow.model.build import build_model, is_pretrained
from detflow.model.checkpoint_file import read_checkpoint, resolve_postprocess, stored_postprocess
from detflow.model.postprocess import model_kwargs
from detflow.model.postprocess_config import PostprocessOptions


def load_checkpoint(
    path: str | Path, *, postprocess: PostprocessOptions | None = None, device="cpu"
):
    """Rebuild the model from a checkpoint (``weights_only=True``); returns (model, state).

    The model is built offline (no weights downloaded or read) with the structure it was
    trained with, then the checkpoint's weights are loaded into it; its post-processing is
    ``postprocess`` (an ``auto`` ``max_detections``: the checkpoint's), else the checkpoint's
    own.
    """
    state = read_checkpoint(path, device=device)
    if postprocess is not None:
        postprocess = resolve_postprocess(postprocess, state)
    model_config = {**state["model"], "weights": "none", "backbone_weights": "none"}
    model = build_model(
        **model_config,
        num_classes=len(state["class_names"]),
        frozen_norm=is_pretrained(state["model"]),
        **model_kwargs(stored_postprocess(state) if postprocess is None else postprocess),
    )
    model.load_state_dict(state["model_state"])
    model.to(device).eval()
    return model, state
