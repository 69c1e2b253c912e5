"""PyTorch inference: run a detector on images, post-process its output with the shared
``postprocess.*`` options, and score it with COCO metrics, P/R/F1 and a confusion matrix
(the ``evaluate.*`` options: :class:`EvaluateOptions`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from detflow.core.errors import ConfigError, DetflowError, require_positive
from detflow.core.faults import maybe_kill
from detflow.core.options import ConfigOptions
from detflow.data.torch_dataset import DetectionDataset
from detflow.evaluate.metrics import (
    Evaluation,
    evaluate_predictions,
    evaluate_predictor,
    latency_summary,
    run_predictor,
)
from detflow.model.postprocess import apply_postprocess
from detflow.model.postprocess_config import PostprocessOptions


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


def _predict_one(model, postprocess, device):
    def predict_one(image: torch.Tensor) -> dict:
        out = detect_images(model, [image], device, postprocess=postprocess)[0]
        return {k: v.numpy() for k, v in out.items()}

    return predict_one


def detect_dataset(
    model,
    dataset: DetectionDataset,
    *,
    postprocess: PostprocessOptions | None = None,
    device: str | torch.device = "cpu",
) -> tuple[dict[int, dict], list[float]]:
    """The detections evaluate scores: image id → numpy ``boxes`` (xyxy px), ``labels``,
    ``scores`` for every image of ``dataset`` (batch 1), and the per-image latency in ms."""
    return run_predictor(_predict_one(model, postprocess, device), dataset)


def evaluate_model(
    model,
    dataset: DetectionDataset,
    *,
    postprocess: PostprocessOptions | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """COCO metrics of ``model`` on ``dataset`` plus per-image latency (ms, batch 1); the
    quick figures of per-epoch validation (see :func:`evaluate` for everything)."""
    return evaluate_predictor(_predict_one(model, postprocess, device), dataset)


def evaluate(
    model,
    dataset: DetectionDataset,
    *,
    postprocess: PostprocessOptions,
    options: EvaluateOptions,
    device: str | torch.device = "cpu",
) -> Evaluation:
    """Everything the evaluate stage reports on ``dataset``: COCO statistics, P/R/F1 at
    ``options.score_threshold`` and at the F1-optimal threshold, curves, the confusion matrix
    at ``options.iou`` and PyTorch latency (ms per image, batch 1, post-processing
    included)."""
    if len(dataset) == 0:
        raise DetflowError(f"{dataset.json_path}: no images to evaluate on")
    predict_one = _predict_one(model, postprocess, device)

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
