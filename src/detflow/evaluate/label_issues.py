"""Which labels are likely wrong: cleanlab's object-detection scores (ObjectLab) on splits
the model did not train on, thresholded as cleanlab's own ``find_label_issues`` does.

Three kinds of candidate, each with cleanlab's per-box quality score in [0, 1] (lower: more
likely a label error), ranked together, lowest first. A box is a candidate only when its
score is at or below its class's threshold (:func:`issue_thresholds`: the class's AP on the
split, scaled by cleanlab's constants), so the list holds the boxes worth opening, not every
box scoring below 1:

- ``overlooked``: a confident detection (score >= ``confidence``, cleanlab's
  high-probability threshold) that
  overlaps no label at all: a box the labeller probably missed (box: the detection);
- ``swapped``: a label whose place holds a confident detection of another class (box: the
  label, ``class``: the label's class, ``suggested``: the detected class);
- ``badly_located``: a label that the detections of its class overlap only poorly (box: the
  label).

A label box gets one candidate (its lower-scoring kind). Boxes are COCO ``xywh`` px in the
records; cleanlab gets ``xyxy`` px, classes ``0..K-1``, and per image one ``[M_k, 5]`` array
``(x1, y1, x2, y2, score)`` of detections per class. Ignored ground truth is left out of the
labels, and an overlooked candidate over an ignored box is dropped.
"""

from __future__ import annotations

import numpy as np
from cleanlab.internal.constants import (
    AP_SCALE_FACTOR,
    BADLOC_THRESHOLD_FACTOR,
    OVERLOOKED_THRESHOLD_FACTOR,
    SWAP_THRESHOLD_FACTOR,
)
from cleanlab.object_detection.rank import (
    compute_badloc_box_scores,
    compute_overlooked_box_scores,
    compute_swap_box_scores,
)

from detflow.core.boxes import box_iou, xywh_to_xyxy, xyxy_to_xywh
from detflow.data import manifest
from detflow.evaluate.metrics import coco_metrics, empty_predictions, match_image, to_coco_results

KINDS = ("overlooked", "swapped", "badly_located")
CLEANLAB_CONFIDENCE = 0.95  # cleanlab's high_probability_threshold
# cleanlab.object_detection.filter.find_label_issues: a box is an issue when its score is at
# or below (its class's AP) × AP_SCALE_FACTOR × the factor of its kind
FACTORS = {
    "overlooked": OVERLOOKED_THRESHOLD_FACTOR,
    "swapped": SWAP_THRESHOLD_FACTOR,
    "badly_located": BADLOC_THRESHOLD_FACTOR,
}


def issue_thresholds(dataset: dict, predictions: dict[int, dict]) -> dict[str, float]:
    """Class name → the score at or below which a box of that class is a label issue,
    before the kind's factor: the class's AP (COCO mAP50-95 of ``predictions`` on
    ``dataset``, the split under review) × cleanlab's ``AP_SCALE_FACTOR`` (0.25), the rule of
    cleanlab's ``find_label_issues`` for detection (it multiplies by 0.8 per kind:
    :data:`FACTORS`). A class the model finds well gets a higher bar; a class without labels
    on the split gets 0 (only boxes scoring 0 stay). ``predictions``: image id → ``boxes``
    ``[N, 4]`` xyxy px, ``labels``, ``scores``."""
    detections = [
        record
        for image_id, p in predictions.items()
        for record in to_coco_results(image_id, p["boxes"], p["labels"], p["scores"])
    ]
    per_class = coco_metrics(dataset, detections)["per_class_map50_95"]
    return {
        name: round(per_class.get(name, 0.0) * AP_SCALE_FACTOR, 6)
        for name in manifest.class_names(dataset)
    }


def confident_score(dataset: dict, predictions: dict[int, dict]) -> float:
    """``evaluate.issue_confidence: auto``: the mean score of the model's right detections on
    ``dataset`` (a split it did not train on; right: matching a label of their class at IoU
    >= 0.5, greedy, highest score first). This is confident learning's threshold (a class's
    average self-confidence, Northcutt et al. 2021) pooled over classes: a detection scored
    at least as high as the model scores what it gets right is confident. A model whose scores
    run low gets a lower bar than cleanlab's fixed 0.95, one whose scores run high a higher
    one; cleanlab's 0.95 when nothing matches. ``predictions``: image id → ``boxes`` ``[N, 4]``
    xyxy px, ``labels``, ``scores``."""
    labels, preds, _ = cleanlab_inputs(dataset, predictions)
    right = []
    for label, per_class in zip(labels, preds, strict=True):
        rows = np.concatenate(per_class) if per_class else np.zeros((0, 5))
        classes = np.concatenate([np.full(len(p), k) for k, p in enumerate(per_class)] or [[]])
        matched = match_image(
            label["bboxes"], label["labels"], rows[:, :4], classes, rows[:, 4], iou=0.5
        )
        right += [float(v) for v in rows[matched >= 0, 4]]
    return round(float(np.mean(right)), 6) if right else CLEANLAB_CONFIDENCE


def cleanlab_inputs(dataset: dict, predictions: dict[int, dict]) -> tuple[list, list, list]:
    """(labels, predictions, ignored boxes) per image of ``dataset``, in its image order, in
    cleanlab's formats (module docstring); ignored boxes ``[G, 4]`` xyxy px."""
    classes = len(dataset["categories"])
    by_image = manifest.annotations_by_image(dataset)
    labels, preds, ignored = [], [], []
    for image in dataset["images"]:
        anns = by_image.get(image["id"], [])
        real = [a for a in anns if not manifest.is_ignored(a)]
        labels.append(
            {
                "bboxes": xywh_to_xyxy([a["bbox"] for a in real]).reshape(-1, 4),
                "labels": np.array([a["category_id"] - 1 for a in real], dtype=np.int64),
            }
        )
        ignored.append(
            xywh_to_xyxy([a["bbox"] for a in anns if manifest.is_ignored(a)]).reshape(-1, 4)
        )
        pred = predictions.get(image["id"]) or empty_predictions()
        boxes = np.asarray(pred["boxes"], dtype=float).reshape(-1, 4)
        rows = np.concatenate([boxes, np.asarray(pred["scores"], float).reshape(-1, 1)], axis=1)
        labels_k = np.asarray(pred["labels"]).reshape(-1) - 1
        preds.append([rows[labels_k == k] for k in range(classes)])
    return labels, preds, ignored


def find_label_issues(
    dataset: dict,
    predictions: dict[int, dict],
    *,
    split: str,
    confidence: float = 0.95,
    thresholds: dict[str, float] | None = None,
) -> list[dict]:
    """The candidates of ``dataset`` (module docstring), lowest score first: ``{"split",
    "image", "image_id", "kind", "score", "box" (xywh px), "class"}`` (+ ``suggested`` for a
    swap). ``confidence``: the score from which a detection counts as confident for
    overlooked and swapped boxes (cleanlab's ``high_probability_threshold``, default 0.95).
    ``thresholds``: class name → bar (:func:`issue_thresholds`, measured here when None); a
    box is a candidate when its score is at or below its class's bar × its kind's factor."""
    labels, preds, ignored = cleanlab_inputs(dataset, predictions)
    if not labels:
        return []
    if thresholds is None:
        thresholds = issue_thresholds(dataset, predictions)
    overlooked = compute_overlooked_box_scores(
        labels=labels, predictions=preds, high_probability_threshold=confidence
    )
    swapped = compute_swap_box_scores(
        labels=labels, predictions=preds, high_probability_threshold=confidence
    )
    badloc = compute_badloc_box_scores(labels=labels, predictions=preds)
    names = manifest.class_names(dataset)
    records = []
    for i, image in enumerate(dataset["images"]):
        base = {"split": split, "image": image["file_name"], "image_id": image["id"]}
        records += _label_candidates(base, labels[i], preds[i], swapped[i], badloc[i], names)
        records += _overlooked_candidates(base, preds[i], overlooked[i], ignored[i], names)
    records = [r for r in records if r["score"] <= thresholds[r["class"]] * FACTORS[r["kind"]]]
    return sorted(records, key=lambda r: (r["score"], r["split"], r["image_id"]))


def _label_candidates(base, label, pred, swap_scores, badloc_scores, names) -> list[dict]:
    """One candidate per label box that has a finite score below 1 (its lower kind)."""
    out = []
    for j, (box, k) in enumerate(zip(label["bboxes"], label["labels"], strict=True)):
        scores = {"swapped": swap_scores[j], "badly_located": badloc_scores[j]}
        scores = {kind: float(s) for kind, s in scores.items() if np.isfinite(s) and s < 1}
        if not scores:
            continue
        kind = min(scores, key=scores.get)
        record = {**base, "kind": kind, "score": round(scores[kind], 6)}
        record |= {"box": _xywh(box), "class": names[int(k)]}
        if kind == "swapped":
            record["suggested"] = _suggested(box, int(k), pred, names)
        out.append(record)
    return out


def _overlooked_candidates(base, pred, scores, ignored, names) -> list[dict]:
    """One candidate per confident detection that overlaps no label (cleanlab's order of
    detections: class by class), the best scoring of overlapping ones, none over an
    ignored box."""
    boxes = np.concatenate([p[:, :4] for p in pred]) if pred else np.zeros((0, 4))
    classes = np.concatenate([np.full(len(p), k) for k, p in enumerate(pred)]) if pred else []
    order = [d for d in np.argsort(scores, kind="stable") if np.isfinite(scores[d])]
    kept: list[int] = []
    for d in order:
        if kept and (box_iou(boxes[[d]], boxes[kept]) > 0.5).any():
            continue
        if len(ignored) and (box_iou(boxes[[d]], ignored) > 0.5).any():
            continue
        kept.append(d)
    return [
        {
            **base,
            "kind": "overlooked",
            "score": round(float(scores[d]), 6),
            "box": _xywh(boxes[d]),
            "class": names[int(classes[d])],
        }
        for d in kept
    ]


def _suggested(box, label: int, pred: list[np.ndarray], names: list[str]) -> str | None:
    """The class of the most confident other-class detection overlapping ``box``."""
    best, best_score = None, -1.0
    for k, rows in enumerate(pred):
        if k == label or not len(rows):
            continue
        overlap = box_iou(np.asarray([box]), rows[:, :4])[0]
        for score in rows[overlap > 0, 4]:
            if score > best_score:
                best, best_score = names[k], float(score)
    return best


def _xywh(box) -> list[float]:
    return [round(float(v), 2) for v in xyxy_to_xywh(np.asarray(box, float).reshape(1, 4))[0]]
