"""The evaluate stage's report on disk: DVC metrics, DVC plot data and a preview image.

Layout under ``out_dir``: ``metrics.json``; ``plots/pr/<class>.json`` (records ``{recall,
precision}``, IoU 0.5); ``plots/confidence.json`` (``{confidence, precision, recall, f1}``);
``plots/confusion.json`` (one ``{actual, predicted}`` record per count, for DVC's
``confusion`` template); ``plots/predictions.png`` (test images, ground truth in white,
predictions at the operating threshold in class colours with their scores).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from detflow.core.draw import draw_boxes, image_grid
from detflow.core.files import atomic_dir, write_json
from detflow.core.images import load_rgb
from detflow.evaluate.inference import EvaluateOptions
from detflow.evaluate.metrics import Evaluation, empty_predictions

GROUND_TRUTH_COLOR = (255, 255, 255)


def write_evaluation(
    evaluation: Evaluation,
    out_dir: str | Path,
    *,
    dataset,
    options: EvaluateOptions,
) -> None:
    """Write the report (layout above); the plots folder and each file appear atomically.

    ``dataset``: the :class:`detflow.data.torch_dataset.DetectionDataset` evaluated; the
    preview shows its first ``options.preview_images`` images, ``options.preview_columns``
    wide, with the predictions scoring at least ``options.score_threshold``.
    """
    out_dir = Path(out_dir)
    with atomic_dir(out_dir / "plots") as plots:
        (plots / "pr").mkdir()
        for slug, (name, curve) in zip(
            _slugs(evaluation.pr_curves), evaluation.pr_curves.items(), strict=True
        ):
            pairs = zip(curve["recall"], curve["precision"], strict=True)
            rows = [{"class": name, "recall": r, "precision": p} for r, p in pairs]
            write_json(plots / "pr" / f"{slug}.json", rows)
        write_json(plots / "confidence.json", evaluation.confidence_curve)
        write_json(plots / "confusion.json", confusion_records(evaluation))
        grid = preview_grid(
            evaluation,
            dataset,
            count=options.preview_images,
            columns=options.preview_columns,
            score_threshold=options.score_threshold,
        )
        Image.fromarray(grid).save(plots / "predictions.png", optimize=True)
    write_json(out_dir / "metrics.json", evaluation.metrics)


def confusion_records(evaluation: Evaluation) -> list[dict]:
    """The confusion matrix as one ``{"actual", "predicted"}`` record per count."""
    names, matrix = evaluation.labels, evaluation.confusion
    return [
        {"actual": names[i], "predicted": names[j]}
        for i, j in zip(*np.nonzero(matrix), strict=True)
        for _ in range(int(matrix[i, j]))
    ]


def preview_grid(
    evaluation: Evaluation, dataset, *, count: int, columns: int, score_threshold: float
) -> np.ndarray:
    """The first ``count`` images of ``dataset`` with ground truth (white) and predictions
    scoring >= ``score_threshold`` (class colours, with scores), tiled ``columns`` wide."""
    names = dict(enumerate(dataset.class_names, start=1))
    tiles = []
    for index in range(min(count, len(dataset))):
        image = np.asarray(load_rgb(dataset.image_path(index)))
        target = dataset.target(index)
        width = max(2, round(max(image.shape[:2]) / 200))
        image = draw_boxes(
            image,
            boxes=target["boxes"].tolist(),
            labels=target["labels"].tolist(),
            names=names,
            color=GROUND_TRUTH_COLOR,
            width=width + 1,
        )
        pred = evaluation.predictions.get(target["image_id"]) or empty_predictions()
        kept = np.asarray(pred["scores"]) >= score_threshold
        image = draw_boxes(
            image,
            boxes=pred["boxes"][kept].tolist(),
            labels=pred["labels"][kept].tolist(),
            names=names,
            scores=pred["scores"][kept].tolist(),
            width=width,
        )
        tiles.append(image)
    return image_grid(tiles, columns=min(columns, len(tiles)), cell=320)


def _slugs(names) -> list[str]:
    """File-name-safe, unique names."""
    out = []
    for name in names:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "class"
        while slug in out:
            slug += "_"
        out.append(slug)
    return out
