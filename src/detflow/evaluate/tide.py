"""Why a detector fails: a TIDE error breakdown (Bolya et al., ECCV 2020) via ``tidecv``
(the ``tidecv-light`` package, numpy only, pinned).

Each detection that is not a true positive at IoU 0.5 (``pos_threshold``), and each missed
ground-truth box, is given one error type: ``cls`` (right place, wrong class), ``loc`` (right
class, IoU between the background threshold 0.1 and 0.5), ``both`` (wrong class and badly
placed), ``dupe`` (a second detection of a box already found), ``bkg`` (on background) and
``miss`` (a box no detection covers). An error type's figure is the AP50 it would give back
if every error of that type were fixed (TIDE's "dAP"), in mAP points (0-100), overall (mean
over classes, TIDE's mAP) and per class. Boxes are xyxy px (tidecv-light's format);
ignored ground truth is an ignore region of its class.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from tidecv import TIDE, Data

from detflow.core.boxes import xywh_to_xyxy
from detflow.data import manifest
from detflow.evaluate.metrics import empty_predictions

ERROR_NAMES = {
    "Cls": "cls",
    "Loc": "loc",
    "Both": "both",
    "Dupe": "dupe",
    "Bkg": "bkg",
    "Miss": "miss",
}


def tide_data(ground_truth: dict, predictions: dict[int, dict]) -> tuple[Data, Data]:
    """tidecv's ground-truth and detection collections of a canonical dataset and its
    predictions (image id → ``boxes`` ``[N, 4]`` xyxy px, ``labels`` category ids,
    ``scores``); every image of the dataset is registered."""
    gt, preds = Data("ground truth"), Data("detections")
    by_image = manifest.annotations_by_image(ground_truth)
    for category in ground_truth["categories"]:
        gt.add_class(category["id"], category["name"])
        preds.add_class(category["id"], category["name"])
    for image in ground_truth["images"]:
        gt.add_image(image["id"], image["file_name"])
        for ann in by_image.get(image["id"], []):
            box = [float(v) for v in xywh_to_xyxy([ann["bbox"]])[0]]
            if manifest.is_ignored(ann):
                gt.add_ignore_region(image["id"], ann["category_id"], box)
            else:
                gt.add_ground_truth(image["id"], ann["category_id"], box)
        pred = predictions.get(image["id"]) or empty_predictions()
        boxes = np.asarray(pred["boxes"], dtype=float).reshape(-1, 4)
        for box, label, score in zip(boxes, pred["labels"], pred["scores"], strict=True):
            preds.add_detection(image["id"], int(label), float(score), [float(v) for v in box])
    return gt, preds


def error_breakdown(ground_truth: dict, predictions: dict[int, dict]) -> dict:
    """``{"map50": TIDE's AP50 (points), "overall": {error: dAP}, "per_class": {name:
    {"ap50": points, error: dAP}}}`` for the error types of :data:`ERROR_NAMES`, rounded to
    0.01 points. Per-class dAP is the class's AP50 gain (clipped at 0, as TIDE's overall)."""
    gt, preds = tide_data(ground_truth, predictions)
    tide = TIDE()
    with contextlib.redirect_stdout(io.StringIO()):
        run = tide.evaluate(gt, preds, mode=TIDE.BOX, name="test")
        overall = tide.get_main_errors()["test"]
    names = {c["id"]: c["name"] for c in ground_truth["categories"]}
    base = {k: obj.get_ap() for k, obj in run.ap_data.objs.items()}
    per_class = {names[k]: {"ap50": round(base[k], 2)} for k in sorted(base) if k in names}
    for error_type in TIDE._error_types:
        fixed = run.fix_errors(lambda err, t=error_type: isinstance(err, t))
        for k in sorted(base):
            if k in names:
                gain = max(fixed.objs[k].get_ap() - base[k], 0.0)
                per_class[names[k]][ERROR_NAMES[error_type.short_name]] = round(gain, 2)
    return {
        "map50": round(run.ap, 2),
        "overall": {ERROR_NAMES[k]: round(float(v), 2) for k, v in overall.items()},
        "per_class": per_class,
    }


def error_records(breakdown: dict) -> list[dict]:
    """The breakdown as ``{"error", "class", "dap"}`` records (overall as class ``all``) for
    a DVC bar chart."""
    rows = [{"error": e, "class": "all", "dap": v} for e, v in breakdown["overall"].items()]
    for name, errors in breakdown["per_class"].items():
        rows += [{"error": e, "class": name, "dap": v} for e, v in errors.items() if e != "ap50"]
    return rows
