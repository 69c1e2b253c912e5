"""Which labels are likely wrong: cleanlab's object-detection scores (ObjectLab) on splits
the model did not train on, listed by confident learning's rule (Northcutt et al. 2021) for
boxes: a label is a candidate only when a detection the model is confident of contradicts it.

Confident: a detection scoring at least ``confidence`` (:func:`confident_score`: confident
learning's threshold, the model's mean self-confidence over the val labels). Match: IoU >=
:data:`MATCH_IOU` (0.5), what makes a detection right in evaluate's AP50. A label that a
confident detection of its class matches is *confirmed* and never listed; a confident
detection that matches a label of its class is *explained* and is evidence against no other
box (a person holding a dog: the dog's detection does not make the person a swap). The
unexplained confident detections then give three kinds of candidate, the off-diagonal cells
of confident learning's confident joint, with the match in place of the label's class:

- ``overlooked``: an unexplained confident detection that overlaps no label, not counting
  labels of other classes *seen in place* (below): a box the labeller probably missed (box:
  the detection; ``class``: the detected class). In a crowd an unlabelled object touches its
  neighbours' labels; a neighbour the model sees in place is accounted for by its own detection;
- ``swapped``: an unconfirmed label that an unexplained confident detection of another class
  matches (box: the label, ``class``: the label's class, ``suggested``: the detected class);
- ``badly_located``: an unconfirmed label that unexplained confident detections of its class
  overlap, each at IoU < 0.5, and that the model does not see in place (box: the label).

Seen in place: a detection of the label's class scoring at least ``operating`` (the score from
which evaluate shows a detection, ``evaluate.score_threshold``) matches it. The model then
finds the object where the label says, so a confident box of its class beside it is the
model's error (a duplicate, a neighbour), not the label's.

So the data bound the list: its length is the number of boxes the model confidently
disagrees with, few on a clean split with a good model, and a box that merely scores below
1 is not listed. Candidates are ranked by cleanlab's per-box quality score in [0, 1] (lower:
more likely a label error) over the unexplained confident detections, lowest first:
overlooked ≈ 0 (similarity to the nearest label of the class, none overlapping), swapped =
1 − similarity to the closest such detection of another class, badly located = similarity to
the best one of its class (similarity: 0.9 IoU + 0.1 centre closeness), so the three share
one scale: how far the model's confident box is from the label. A label gets one candidate
(its lower-scoring kind).

Boxes are COCO ``xywh`` px in the records; cleanlab gets ``xyxy`` px, classes ``0..K-1``,
and per image one ``[M_k, 5]`` array ``(x1, y1, x2, y2, score)`` of detections per class.
Ignored ground truth is left out of the labels, and an overlooked candidate over an ignored
box is dropped.
"""

from __future__ import annotations

import numpy as np
from cleanlab.internal.constants import ALPHA
from cleanlab.object_detection.rank import (
    _get_valid_inputs_for_compute_scores,
    compute_badloc_box_scores,
    compute_overlooked_box_scores,
    compute_swap_box_scores,
)

from detflow.core.boxes import box_iou, xywh_to_xyxy, xyxy_to_xywh
from detflow.data import manifest
from detflow.evaluate.metrics import empty_predictions, match_image

KINDS = ("overlooked", "swapped", "badly_located")
CLEANLAB_CONFIDENCE = 0.95  # cleanlab's high_probability_threshold
MATCH_IOU = 0.5  # a detection matches a box from this IoU (what makes it right in AP50)


def confident_score(dataset: dict, predictions: dict[int, dict]) -> float:
    """``evaluate.issue_confidence: auto``: the model's mean self-confidence over the labels of
    ``dataset`` (a split it did not train on): each label scores its matching detection's score
    (same class, IoU >= :data:`MATCH_IOU`, greedy, highest score first), 0 when no detection
    finds it. This is confident learning's threshold (a class's average self-confidence over
    the examples labelled with it, Northcutt et al. 2021) pooled over classes: a detection
    scored at least as high as the model scores the labelled objects is confident; a missed
    object counts, so a model that finds few of them gets a lower bar (the mean over the right
    detections alone sets it higher: 0.73 against 0.67 on the crowded planted set of
    ``bench/planted_label_errors.py --dataset dense``, where the model misses more). Pooled,
    because a per-class mean over a split of a few dozen images swings by 0.1 (dogs in the
    thermal planted splits: 0.67 on val, 0.76 on test). cleanlab's 0.95 when nothing
    matches. ``predictions``: image id → ``boxes`` ``[N, 4]`` xyxy px, ``labels``,
    ``scores``."""
    labels, preds, _ = cleanlab_inputs(dataset, predictions)
    right, boxes = [], sum(len(label["labels"]) for label in labels)
    for label, per_class in zip(labels, preds, strict=True):
        rows, classes = _stack(per_class)
        matched = match_image(
            label["bboxes"], label["labels"], rows[:, :4], classes, rows[:, 4], iou=MATCH_IOU
        )
        right += [float(v) for v in rows[matched >= 0, 4]]
    return round(float(np.sum(right)) / boxes, 6) if right else CLEANLAB_CONFIDENCE


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
    confidence: float = CLEANLAB_CONFIDENCE,
    operating: float = 0.5,
) -> list[dict]:
    """The candidates of ``dataset`` (module docstring), lowest score first: ``{"split",
    "image", "image_id", "kind", "score", "box" (xywh px), "class"}`` (+ ``suggested`` for a
    swap). ``confidence``: the score from which a detection is confident, for every class
    (:func:`confident_score`; cleanlab's ``high_probability_threshold``, default 0.95);
    ``operating``: the score from which a detection is shown (``evaluate.score_threshold``):
    a label that such a detection of its class matches is seen in place, never badly located."""
    labels, preds, ignored = cleanlab_inputs(dataset, predictions)
    if not labels:
        return []
    names = manifest.class_names(dataset)
    confident = [[rows[rows[:, 4] >= confidence] for rows in per_class] for per_class in preds]
    evidence = [_evidence(label, c) for label, c in zip(labels, confident, strict=True)]
    unexplained = [u for u, _ in evidence]
    shown = min(operating, confidence)
    in_place = [
        _evidence(label, [r[r[:, 4] >= shown] for r in p])[1]
        for label, p in zip(labels, preds, strict=True)
    ]
    scores = _cleanlab_scores(labels, unexplained, in_place)
    records = []
    for i, image in enumerate(dataset["images"]):
        base = {"split": split, "image": image["file_name"], "image_id": image["id"]}
        label_scores = scores["swapped"][i], scores["badly_located"][i]
        records += _label_candidates(base, labels[i], evidence[i], label_scores, names, in_place[i])
        records += _overlooked_candidates(
            base, unexplained[i], scores["overlooked"][i], ignored[i], names
        )
    return sorted(records, key=lambda r: (r["score"], r["split"], r["image_id"]))


def _evidence(label: dict, confident: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """One image's confident detections that no label of their class explains (IoU <
    :data:`MATCH_IOU` with each), per class as cleanlab takes them, and per label whether a
    confident detection of its class matches it (the model confirms it)."""
    unexplained, confirmed = [], np.zeros(len(label["labels"]), dtype=bool)
    for k, rows in enumerate(confident):
        mine = label["labels"] == k
        hits = box_iou(label["bboxes"][mine], rows[:, :4]) >= MATCH_IOU  # [L_k, D_k]
        confirmed[mine] = hits.any(axis=1)
        unexplained.append(rows[~hits.any(axis=0)])
    return unexplained, confirmed


def _overlooked_scores(labels: list, unexplained: list, in_place: list) -> list[np.ndarray]:
    """cleanlab's overlooked score of each unexplained confident detection (per image, in
    cleanlab's order: class by class), where a label of another class that the model sees in
    place does not count as overlapping it: that label is its own detection's, so a box touching
    it (a neighbour in a crowd) can still be an unlabelled object. Labels of the detection's own
    class all count (an overlapping same-class box is more likely a duplicate)."""
    images, classes = len(labels), len(unexplained[0]) if unexplained else 0
    per_class = []
    for k in range(classes):
        open_labels = [
            {"bboxes": lab["bboxes"][keep], "labels": lab["labels"][keep]}
            for lab, seen in zip(labels, in_place, strict=True)
            for keep in [~seen | (lab["labels"] == k)]
        ]
        only_k = [[r if c == k else r[:0] for c, r in enumerate(rows)] for rows in unexplained]
        per_class.append(
            compute_overlooked_box_scores(
                labels=open_labels, predictions=only_k, high_probability_threshold=0.0
            )
        )
    return [np.concatenate([per_class[k][i] for k in range(classes)]) for i in range(images)]


def _cleanlab_scores(labels: list, evidence: list, in_place: list) -> dict[str, list[np.ndarray]]:
    """cleanlab's per-box scores of each kind over ``evidence`` (per image and class, the
    unexplained confident detections; cleanlab's probability thresholds at 0: every one given
    counts); overlooked by :func:`_overlooked_scores` (``in_place``: per image and label).
    The swap score is the distance to the other class's detection, without cleanlab's floors:
    the one for a label that overlaps a label of another class, and the dataset's smallest
    label-detection similarity, which over these few detections is large (0.80 on the bundled
    test split) and gave every swap the same score. Swap and badly-located scores share one
    set of similarity matrices (the badly-located score does not read that floor)."""
    inputs = _get_valid_inputs_for_compute_scores(ALPHA, labels, evidence)
    for image in inputs:
        image["min_possible_similarity"] = 0.0
    return {
        "overlooked": _overlooked_scores(labels, evidence, in_place),
        "swapped": compute_swap_box_scores(
            auxiliary_inputs=inputs, high_probability_threshold=0.0, overlapping_label_check=False
        ),
        "badly_located": compute_badloc_box_scores(
            auxiliary_inputs=inputs, low_probability_threshold=0.0
        ),
    }


def _label_candidates(base, label, evidence, scores, names, in_place) -> list[dict]:
    """One candidate per label box that the model does not confirm and its unexplained
    confident detections contradict (module docstring), of its lower-scoring kind;
    ``evidence``: :func:`_evidence`; ``scores``: cleanlab's (swap, badloc) per label;
    ``in_place``: per label, whether a shown detection of its class matches it."""
    unexplained, confirmed = evidence
    rows, classes = _stack(unexplained)
    overlap = box_iou(label["bboxes"], rows[:, :4])  # [L, D]
    out = []
    for j, (box, k) in enumerate(zip(label["bboxes"], label["labels"], strict=True)):
        if confirmed[j]:
            continue
        own, kinds = classes == k, {}
        if (overlap[j, ~own] >= MATCH_IOU).any():
            kinds["swapped"] = float(scores[0][j])
        if (overlap[j, own] > 0).any() and not in_place[j]:
            kinds["badly_located"] = float(scores[1][j])
        if not kinds:
            continue
        kind = min(kinds, key=kinds.get)
        record = {**base, "kind": kind, "score": round(kinds[kind], 6)}
        record |= {"box": _xywh(box), "class": names[int(k)]}
        if kind == "swapped":
            record["suggested"] = _suggested(box, int(k), unexplained, names)
        out.append(record)
    return out


def _overlooked_candidates(base, pred, scores, ignored, names) -> list[dict]:
    """One candidate per unexplained confident detection that :func:`_overlooked_scores`
    scores (it overlaps no label that counts; cleanlab's order of detections: class by class),
    the best scoring of overlapping ones, none over an ignored box."""
    boxes, classes = _stack(pred)
    order = [d for d in np.argsort(scores, kind="stable") if np.isfinite(scores[d])]
    kept: list[int] = []
    for d in order:
        if kept and (box_iou(boxes[[d], :4], boxes[kept, :4]) > 0.5).any():
            continue
        if len(ignored) and (box_iou(boxes[[d], :4], ignored) > 0.5).any():
            continue
        kept.append(d)
    return [
        {
            **base,
            "kind": "overlooked",
            "score": round(float(scores[d]), 6),
            "box": _xywh(boxes[d, :4]),
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


def _stack(per_class: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One image's detections ``[D, 5]`` (x1, y1, x2, y2, score), class by class, and their
    classes ``[D]``."""
    if not per_class:
        return np.zeros((0, 5)), np.zeros(0, dtype=np.int64)
    classes = np.concatenate([np.full(len(p), k, dtype=np.int64) for k, p in enumerate(per_class)])
    return np.concatenate(per_class).reshape(-1, 5), classes


def _xywh(box) -> list[float]:
    return [round(float(v), 2) for v in xyxy_to_xywh(np.asarray(box, float).reshape(1, 4))[0]]
