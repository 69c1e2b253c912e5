"""The evaluate stage's report on disk: DVC metrics, DVC plot data and a preview image.

Layout under ``out_dir``: ``metrics.json``; ``plots/pr/<class>.json`` (records ``{recall,
precision}``, IoU 0.5); ``plots/confidence.json`` (``{confidence, precision, recall, f1}``);
``plots/confusion.json`` (one ``{actual, predicted}`` record per count, for DVC's
``confusion`` template); ``plots/predictions.png`` (test images, ground truth in white,
predictions at the operating threshold in class colours with their scores).
With an :class:`detflow.evaluate.insight.Insight`: its figures in ``metrics.json``,
``label_issues.json`` (``{"issues": [...], "predictions": {split: {image id: [...]}}}``,
candidates best first, predictions >= ``evaluate.score_threshold`` on their images; boxes
COCO ``xywh`` px),
``plots/errors.json`` (TIDE dAP records ``{"error": "<class>: <type>", "dap"}``, class
``all`` first, for DVC's ``bar_horizontal``) and ``plots/label_issues.png`` (the top
candidates: the candidate box in red captioned with its kind and score, the image's labels
in white, detections >= the operating threshold in class colours).
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
from detflow.evaluate.insight import Insight
from detflow.evaluate.metrics import Evaluation, empty_predictions, to_coco_results

GROUND_TRUTH_COLOR = (255, 255, 255)
ISSUE_COLOR = (255, 40, 40)


def write_evaluation(
    evaluation: Evaluation,
    out_dir: str | Path,
    *,
    dataset,
    options: EvaluateOptions,
    insight: Insight | None = None,
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
        if insight is not None:
            write_json(plots / "errors.json", error_chart(insight.metrics["errors"]))
            grid = issue_grid(insight, count=options.issue_grid, columns=options.preview_columns)
            Image.fromarray(grid).save(plots / "label_issues.png", optimize=True)
    if insight is not None:
        predictions = issue_predictions(insight, score_threshold=options.score_threshold)
        write_json(
            out_dir / "label_issues.json", {"issues": insight.issues, "predictions": predictions}
        )
    extra = insight.metrics if insight is not None else {}
    write_json(out_dir / "metrics.json", {**evaluation.metrics, **extra})


def issue_predictions(insight: Insight, *, score_threshold: float) -> dict:
    """split → image id (str) → the predictions scoring >= ``score_threshold`` on the
    candidates' images (``{"bbox": xywh px, "category_id", "score"}``): ``detflow review``'s
    pre-labels."""
    out: dict[str, dict[str, list]] = {}
    for issue in insight.issues:
        split, image_id = issue["split"], issue["image_id"]
        if str(image_id) in out.get(split, {}):
            continue
        pred = insight.predictions[split].get(image_id) or empty_predictions()
        kept = np.asarray(pred["scores"]) >= score_threshold
        records = to_coco_results(
            image_id, pred["boxes"][kept], pred["labels"][kept], pred["scores"][kept]
        )
        out.setdefault(split, {})[str(image_id)] = [
            {
                "bbox": [round(v, 2) for v in r["bbox"]],
                "category_id": r["category_id"],
                "score": round(r["score"], 4),
            }
            for r in records
        ]
    return out


def error_chart(breakdown: dict) -> list[dict]:
    """TIDE dAP records for a horizontal bar chart: overall (``all: cls`` …), then per class."""
    rows = [{"error": f"all: {e}", "dap": v} for e, v in breakdown["overall"].items()]
    for name, errors in breakdown["per_class"].items():
        rows += [{"error": f"{name}: {e}", "dap": v} for e, v in errors.items() if e != "ap50"]
    return rows


def issue_grid(insight: Insight, *, count: int, columns: int) -> np.ndarray:
    """The first ``count`` label-issue candidates drawn on their images (module docstring);
    a dark tile when there are none."""
    tiles = []
    for issue in insight.issues[:count]:
        dataset = insight.datasets[issue["split"]]
        index = next(i for i, im in enumerate(dataset.images) if im["id"] == issue["image_id"])
        names = dict(enumerate(dataset.class_names, start=1))
        image, _, width = _with_ground_truth(dataset, index, names, extra_width=0)
        x, y, w, h = issue["box"]
        image = draw_boxes(
            image,
            boxes=[[x, y, x + w, y + h]],
            labels=[0],
            names={0: f"{issue['split']} {issue['kind']} {issue['class']}"},
            scores=[issue["score"]],
            color=ISSUE_COLOR,
            width=width + 1,
        )
        tiles.append(image)
    if not tiles:
        return np.full((64, 64, 3), 24, dtype=np.uint8)
    return image_grid(tiles, columns=min(columns, len(tiles)), cell=320)


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
        image, target, width = _with_ground_truth(dataset, index, names, extra_width=1)
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


def _with_ground_truth(dataset, index: int, names: dict, *, extra_width: int):
    """Image ``index`` of ``dataset`` with its ground truth drawn (``xyxy`` px) in
    :data:`GROUND_TRUTH_COLOR`; returns ``(image, target, line width)``."""
    image = np.asarray(load_rgb(dataset.image_path(index)))
    target = dataset.target(index)
    width = max(2, round(max(image.shape[:2]) / 200))
    image = draw_boxes(
        image,
        boxes=target["boxes"].tolist(),
        labels=target["labels"].tolist(),
        names=names,
        color=GROUND_TRUTH_COLOR,
        width=width + extra_width,
    )
    return image, target, width
