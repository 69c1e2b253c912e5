"""Evaluation you can act on: how far to trust the test figures (bootstrap CIs), why the
model fails (TIDE breakdown), which labels look wrong (cleanlab, val + test) and what the
model costs (params, FLOPs). Runs after :func:`detflow.evaluate.inference.evaluate`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from detflow.core.tile_settings import TileSettings
from detflow.data.torch_dataset import DetectionDataset
from detflow.evaluate.bootstrap import bootstrap_ci
from detflow.evaluate.cost import model_cost
from detflow.evaluate.inference import EvaluateOptions, detect_dataset
from detflow.evaluate.label_issues import confident_score, find_label_issues
from detflow.evaluate.metrics import Evaluation, to_coco_results
from detflow.evaluate.tide import error_breakdown
from detflow.model.postprocess_config import PostprocessOptions


@dataclass
class Insight:
    """``metrics``: keys added to the evaluate metrics (``map50_ci``, ``map50_95_ci``,
    ``per_class_map50_ci``, ``bootstrap``, ``errors``, ``cost``, ``label_issues``: counts,
    ``label_issue_confidence``: the score from which a detection is confident,
    ``label_issue_thresholds``: split → class → that bar, as held to each class's
    detections).
    ``issues``: label-issue candidates, best first (see
    :func:`detflow.evaluate.label_issues.find_label_issues`). ``datasets``: split name →
    the :class:`DetectionDataset` the issues refer to. ``predictions``: split name → image
    id → predictions (``boxes`` xyxy px, ``labels``, ``scores``)."""

    metrics: dict
    issues: list[dict]
    datasets: dict[str, DetectionDataset]
    predictions: dict[str, dict[int, dict]]


def analyse(
    model,
    evaluation: Evaluation,
    *,
    test: DetectionDataset,
    val: DetectionDataset | None,
    postprocess: PostprocessOptions,
    options: EvaluateOptions,
    device: str | torch.device = "cpu",
    tiles: TileSettings | None = None,
) -> Insight:
    """Bootstrap CIs and the TIDE breakdown of ``evaluation`` (on ``test``), label issues on
        ``val`` (predicted here; sliced with ``tiles``, as test was) and ``test``, and the model's
    cost on the first test image."""
    detections = [
        record
        for image_id, p in evaluation.predictions.items()
        for record in to_coco_results(image_id, p["boxes"], p["labels"], p["scores"])
    ]
    metrics = bootstrap_ci(
        test.dataset, detections, resamples=options.bootstrap, seed=options.bootstrap_seed
    )
    metrics["errors"] = error_breakdown(test.dataset, evaluation.predictions)
    datasets, predictions = {"test": test}, {"test": evaluation.predictions}
    if val is not None and len(val):
        datasets["val"] = val
        predictions["val"] = detect_dataset(
            model, val, postprocess=postprocess, device=device, tiles=tiles
        )[0]
    confidence = options.issue_confidence
    if confidence == "auto":  # calibrated on val (test when there is no val)
        calibration = "val" if "val" in datasets else "test"
        confidence = confident_score(datasets[calibration].dataset, predictions[calibration])
    issues, thresholds = [], {}
    for split in ("val", "test"):
        if split in datasets:
            dataset = datasets[split].dataset
            thresholds[split] = dict.fromkeys(datasets[split].class_names, confidence)
            issues += find_label_issues(
                dataset,
                predictions[split],
                split=split,
                confidence=confidence,
                operating=options.score_threshold,
            )
    issues.sort(key=lambda r: (r["score"], r["split"], r["image_id"]))
    metrics["label_issues"] = {
        kind: sum(r["kind"] == kind for r in issues)
        for kind in ("overlooked", "swapped", "badly_located")
    }
    metrics["label_issue_confidence"] = confidence
    metrics["label_issue_thresholds"] = thresholds
    metrics["cost"] = model_cost(model, test[0][0])
    return Insight(metrics=metrics, issues=issues, datasets=datasets, predictions=predictions)
