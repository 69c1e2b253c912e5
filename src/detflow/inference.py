"""PyTorch inference: run a detector on images, post-process its output with the shared
``postprocess.*`` config, and score it with COCO metrics, P/R/F1 and a confusion matrix."""

from __future__ import annotations

import torch

from detflow.datasets import DetectionDataset
from detflow.errors import DetflowError
from detflow.faults import maybe_kill
from detflow.metrics import (
    Evaluation,
    evaluate_predictions,
    evaluate_predictor,
    latency_summary,
    run_predictor,
)
from detflow.postprocess import apply_postprocess


@torch.inference_mode()
def predict(
    model,
    images: list[torch.Tensor],
    device: str | torch.device = "cpu",
    *,
    postprocess: dict | None = None,
) -> list[dict]:
    """Run ``model`` on ``[3, H, W]`` images; outputs ``boxes`` xyxy px, ``labels``, ``scores``.

    ``postprocess``: the shared ``postprocess.*`` config (the model built with its
    :func:`detflow.postprocess.model_kwargs`), applied to each output by
    :func:`detflow.postprocess.apply_postprocess`; None returns the model's own output.
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
        out = predict(model, [image], device, postprocess=postprocess)[0]
        return {k: v.numpy() for k, v in out.items()}

    return predict_one


def predict_dataset(
    model,
    dataset: DetectionDataset,
    *,
    postprocess: dict | None = None,
    device: str | torch.device = "cpu",
) -> tuple[dict[int, dict], list[float]]:
    """The detections evaluate scores: image id → numpy ``boxes`` (xyxy px), ``labels``,
    ``scores`` for every image of ``dataset`` (batch 1), and the per-image latency in ms."""
    return run_predictor(_predict_one(model, postprocess, device), dataset)


def evaluate_model(
    model,
    dataset: DetectionDataset,
    *,
    postprocess: dict | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """COCO metrics of ``model`` on ``dataset`` plus per-image latency (ms, batch 1); the
    quick figures of per-epoch validation (see :func:`evaluate` for everything)."""
    return evaluate_predictor(_predict_one(model, postprocess, device), dataset)


def evaluate(
    model,
    dataset: DetectionDataset,
    *,
    postprocess: dict,
    score_threshold: float,
    iou: float = 0.5,
    device: str | torch.device = "cpu",
) -> Evaluation:
    """Everything the evaluate stage reports on ``dataset``: COCO statistics, P/R/F1 at
    ``score_threshold`` and at the F1-optimal threshold, curves, the confusion matrix at
    ``iou`` and PyTorch latency (ms per image, batch 1, post-processing included)."""
    if len(dataset) == 0:
        raise DetflowError(f"{dataset.json_path}: no images to evaluate on")
    predict_one = _predict_one(model, postprocess, device)

    def predict_and_count(image: torch.Tensor) -> dict:
        out = predict_one(image)
        maybe_kill("evaluate.image")
        return out

    predictions, latencies = run_predictor(predict_and_count, dataset)
    evaluation = evaluate_predictions(
        dataset.dataset, predictions, score_threshold=score_threshold, iou=iou
    )
    evaluation.metrics.update(latency_summary(latencies))
    return evaluation
