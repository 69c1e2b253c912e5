"""PyTorch inference: run a detector on images and score it with COCO metrics."""

from __future__ import annotations

import torch

from detflow.datasets import DetectionDataset
from detflow.metrics import evaluate_predictor


@torch.inference_mode()
def predict(model, images: list[torch.Tensor], device: str | torch.device = "cpu") -> list[dict]:
    """Run ``model`` on ``[3, H, W]`` images; outputs ``boxes`` xyxy px, ``labels``, ``scores``."""
    model.eval()
    outputs = model([im.to(device) for im in images])
    return [{k: v.detach().cpu() for k, v in out.items()} for out in outputs]


def evaluate_model(model, dataset: DetectionDataset, *, device: str | torch.device = "cpu") -> dict:
    """COCO metrics of ``model`` on ``dataset`` plus per-image latency (ms, batch 1)."""

    def predict_one(image: torch.Tensor) -> dict:
        out = predict(model, [image], device)[0]
        return {k: v.numpy() for k, v in out.items()}

    return evaluate_predictor(predict_one, dataset)
