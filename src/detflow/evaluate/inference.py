"""PyTorch inference: run a detector on images, post-process its output with the shared
``postprocess.*`` options, and score it with COCO metrics, P/R/F1 and a confusion matrix
(the ``evaluate.*`` options: :class:`EvaluateOptions`).

A model trained on tiles (its checkpoint's ``tiles``: :class:`detflow.core.tile_settings.
TileSettings`) sees each full image tile by tile (:func:`detflow.core.slicing.tiled_predict`,
the tiles of one image through the model as one batch, merged across tiles); metrics stay
COCO on the full images and their original boxes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from detflow.core.errors import ConfigError, DetflowError, require_positive
from detflow.core.faults import maybe_kill
from detflow.core.options import ConfigOptions
from detflow.core.slicing import tiled_predict
from detflow.core.tile_settings import TileSettings
from detflow.data.torch_dataset import DetectionDataset
from detflow.evaluate.metrics import (
    Evaluation,
    evaluate_predictions,
    evaluate_predictor,
    latency_summary,
    run_predictor,
)
from detflow.model.postprocess import apply_postprocess
from detflow.model.postprocess_config import DEFAULT_MAX_DETECTIONS, PostprocessOptions


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions(ConfigOptions):
    """The validated ``evaluate.*`` (see conf/config.yaml): the operating point and IoU of
    P/R/F1 and the confusion matrix, the preview image's size, the bootstrap's resamples
    (0: no intervals) and seed, how many label-issue candidates the grid draws and the score
    from which a detection counts as confident for them."""

    SECTION = "evaluate"

    score_threshold: float = 0.5
    iou: float = 0.5
    preview_images: int = 8
    preview_columns: int = 4
    bootstrap: int = 1000
    bootstrap_seed: int = 0
    issue_grid: int = 12
    issue_confidence: float | Literal["auto"] = "auto"

    def check(self) -> None:
        require_positive("evaluate.bootstrap", self.bootstrap, allow_zero=True, integer=True)
        require_positive("evaluate.issue_grid", self.issue_grid, integer=True)
        if self.issue_confidence != "auto" and not 0 < self.issue_confidence <= 1:
            raise ConfigError(
                f"evaluate.issue_confidence={self.issue_confidence!r} must be in (0, 1] or auto"
            )
        require_positive("evaluate.score_threshold", self.score_threshold, allow_zero=True)
        require_positive("evaluate.iou", self.iou)
        if self.iou > 1:
            raise ConfigError(f"evaluate.iou={self.iou!r} must be in (0, 1]")
        require_positive("evaluate.preview_images", self.preview_images)
        require_positive("evaluate.preview_columns", self.preview_columns)


@torch.inference_mode()
def detect_images(
    model,
    images: list[torch.Tensor],
    device: str | torch.device = "cpu",
    *,
    postprocess: PostprocessOptions | None = None,
) -> list[dict]:
    """Run ``model`` on ``[3, H, W]`` images; outputs ``boxes`` xyxy px, ``labels``, ``scores``.

    ``postprocess``: the shared ``postprocess.*`` options (the model built with its
    :func:`detflow.model.postprocess.model_kwargs`), applied to each output by
    :func:`detflow.model.postprocess.apply_postprocess`; None returns the model's own output.
    """
    model.eval()
    outputs = model([im.to(device) for im in images])
    outputs = [{k: v.detach().cpu() for k, v in out.items()} for out in outputs]
    if postprocess is None:
        return outputs
    return [
        apply_postprocess(out["boxes"], out["scores"], out["labels"], config=postprocess)
        for out in outputs
    ]


def _predict_one(model, postprocess, device, tiles: TileSettings | None = None):
    """``[3, H, W]`` tensor → numpy ``boxes`` (xyxy px), ``labels``, ``scores``: the model on
    the whole image, or with ``tiles`` tile by tile (:func:`sliced_predictor`)."""
    if tiles is not None:
        return sliced_predictor(model, tiles=tiles, postprocess=postprocess, device=device)

    def predict_one(image: torch.Tensor) -> dict:
        out = detect_images(model, [image], device, postprocess=postprocess)[0]
        return {k: v.numpy() for k, v in out.items()}

    return predict_one


def torch_predict_batch(model, *, postprocess=None, device: str | torch.device = "cpu"):
    """The model as sliced inference's ``predict_batch``: a list of ``[h, w, 3]`` uint8 RGB
    tiles → one dict of numpy ``boxes`` (``[N, 4]`` xyxy px of the tile), ``labels``,
    ``scores`` each, after ``postprocess`` (all tiles in one model call)."""

    def predict_batch(tiles: list[np.ndarray]) -> list[dict]:
        images = [rgb_to_tensor(tile) for tile in tiles]
        outputs = detect_images(model, images, device, postprocess=postprocess)
        return [{k: v.numpy() for k, v in out.items()} for out in outputs]

    return predict_batch


def sliced_predictor(
    model, *, tiles: TileSettings, postprocess=None, device: str | torch.device = "cpu"
):
    """``predict_one`` for a model trained on ``tiles``: a ``[3, H, W]`` float image in
    0..1 → the merged detections (numpy ``boxes`` xyxy px of the full image, ``labels``,
    ``scores``, best first, at most ``postprocess.max_detections``)."""
    predict_batch = torch_predict_batch(model, postprocess=postprocess, device=device)
    limit = getattr(postprocess, "max_detections", None)
    max_detections = limit if isinstance(limit, int) else DEFAULT_MAX_DETECTIONS

    def predict_one(image: torch.Tensor) -> dict:
        out = tiled_predict(
            tensor_to_rgb(image), predict_batch, tiles=tiles, max_detections=max_detections
        )
        return {key: out[key] for key in ("boxes", "labels", "scores")}

    return predict_one


def tensor_to_rgb(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` float tensor in 0..1 → ``[H, W, 3]`` uint8 RGB (exact for the
    dataset's tensors, which are uint8 / 255)."""
    array = image.detach().cpu().mul(255).round_().clamp_(0, 255).to(torch.uint8)
    return array.permute(1, 2, 0).contiguous().numpy()


def rgb_to_tensor(tile: np.ndarray) -> torch.Tensor:
    """``[h, w, 3]`` uint8 RGB → ``[3, h, w]`` float32 tensor in 0..1 (the dataset's and the
    ONNX runtime's values)."""
    return torch.from_numpy(tile.copy()).permute(2, 0, 1).float().div_(255.0)  # owned, C order


def detect_dataset(
    model,
    dataset: DetectionDataset,
    *,
    postprocess: PostprocessOptions | None = None,
    device: str | torch.device = "cpu",
    tiles: TileSettings | None = None,
) -> tuple[dict[int, dict], list[float]]:
    """The detections evaluate scores: image id → numpy ``boxes`` (xyxy px), ``labels``,
    ``scores`` for every image of ``dataset`` (batch 1; with ``tiles``, sliced), and the
    per-image latency in ms."""
    return run_predictor(_predict_one(model, postprocess, device, tiles), dataset)


def evaluate_model(
    model,
    dataset: DetectionDataset,
    *,
    postprocess: PostprocessOptions | None = None,
    device: str | torch.device = "cpu",
    tiles: TileSettings | None = None,
) -> dict:
    """COCO metrics of ``model`` on ``dataset`` plus per-image latency (ms, batch 1); the
    quick figures of per-epoch validation (see :func:`evaluate` for everything). ``tiles``:
    each full image sliced (:func:`sliced_predictor`), scored on its original boxes."""
    return evaluate_predictor(_predict_one(model, postprocess, device, tiles), dataset)


def evaluate(
    model,
    dataset: DetectionDataset,
    *,
    postprocess: PostprocessOptions,
    options: EvaluateOptions,
    device: str | torch.device = "cpu",
    tiles: TileSettings | None = None,
) -> Evaluation:
    """Everything the evaluate stage reports on ``dataset``: COCO statistics, P/R/F1 at
    ``options.score_threshold`` and at the F1-optimal threshold, curves, the confusion matrix
    at ``options.iou`` and PyTorch latency (ms per image, batch 1, post-processing
    included). ``tiles``: the checkpoint's tile settings (each full image sliced, latency
    per full image), None for whole images."""
    if len(dataset) == 0:
        raise DetflowError(f"{dataset.json_path}: no images to evaluate on")
    predict_one = _predict_one(model, postprocess, device, tiles)

    def predict_and_count(image: torch.Tensor) -> dict:
        out = predict_one(image)
        maybe_kill("evaluate.image")
        return out

    predictions, latencies = run_predictor(predict_and_count, dataset)
    evaluation = evaluate_predictions(
        dataset.dataset, predictions, score_threshold=options.score_threshold, iou=options.iou
    )
    evaluation.metrics.update(latency_summary(latencies))
    return evaluation
