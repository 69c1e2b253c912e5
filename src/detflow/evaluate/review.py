"""``detflow review``: the images of the top label-issue candidates, exported for a
labelling tool, with their current labels and the model's predictions as pre-labels.

Reads ``reports/evaluate/label_issues.json`` (written by evaluate: ``issues`` best first,
``predictions`` per split and image id, COCO ``xywh`` px, scoring at least
``evaluate.score_threshold``) and the split files it names (``data/split/<split>.json``).
Writes, with the existing format writers (:func:`detflow.data.convert.convert_dataset`):

- ``OUT/labels/``: the images with their current labels, in ``--format``;
- ``OUT/prelabels/``: the same images with the model's predictions as boxes;
- ``OUT/issues.json``: the candidates exported, best first.

Fix the labels in your tool, then bring the corrected dataset back through ``collect``
(e.g. ``dvc exp run -S data=coco -S data.path=OUT/labels``, docs/evaluation.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from detflow.core.errors import DataError, require_positive
from detflow.core.files import read_json, write_json
from detflow.data import manifest
from detflow.data.convert import TARGETS, convert_dataset


def export_review(
    *,
    issues_json: str | Path,
    split_dir: str | Path,
    out_dir: str | Path,
    fmt: str,
    top: int = 40,
) -> dict:
    """Export the images of the first ``top`` candidates (layout above); returns counts."""
    require_positive("--top", top, integer=True)
    if fmt not in TARGETS:
        raise DataError(f"--format {fmt!r} is not one of {', '.join(TARGETS)}")
    issues_json, out_dir = Path(issues_json), Path(out_dir)
    if not issues_json.is_file():
        raise DataError(f"{issues_json}: no label-issue report; run the evaluate stage first")
    report = read_json(issues_json)
    issues = report["issues"][:top]
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, prelabels = _datasets(issues, report.get("predictions", {}), Path(split_dir))
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        counts = {}
        for name, (dataset, image_dir) in (("labels", labels), ("prelabels", prelabels)):
            json_path = Path(tmp) / f"{name}.json"
            manifest.save_dataset(dataset, json_path, image_dir=image_dir)
            counts[name] = convert_dataset(dataset_json=json_path, out_dir=out_dir / name, to=fmt)[
                "boxes"
            ]
    write_json(out_dir / "issues.json", {"issues": issues})
    return {"images": len(labels[0]["images"]), "issues": len(issues), "boxes": counts}


def _datasets(issues: list[dict], predictions: dict, split_dir: Path):
    """(current labels, predictions as boxes) of the candidates' images, each with its
    image folder; each image's ``split`` is the pipeline split it is in (val or test)."""
    wanted: dict[str, list[int]] = {}
    for issue in issues:
        ids = wanted.setdefault(issue["split"], [])
        if issue["image_id"] not in ids:
            ids.append(issue["image_id"])
    merged_labels, merged_preds, image_dir = None, None, None
    for split, ids in wanted.items():
        json_path = split_dir / f"{split}.json"
        if not json_path.is_file():
            raise DataError(f"{json_path}: the split the label issues name is missing")
        dataset = manifest.load_dataset(json_path)
        folder = manifest.image_dir(json_path, dataset)
        if image_dir is not None and folder != image_dir:
            raise DataError(f"{json_path}: images outside {image_dir}; export one split at a time")
        image_dir = folder
        part = manifest.subset(dataset, ids)
        for image in part["images"]:
            image["split"] = split  # the pipeline's split, not the source's folder
        preds = {**part, "annotations": _prediction_boxes(part, predictions.get(split, {}))}
        merged_labels = _merge(merged_labels, part)
        merged_preds = _merge(merged_preds, preds)
    if merged_labels is None:
        raise DataError("no label-issue candidates to export")
    return (merged_labels, image_dir), (merged_preds, image_dir)


def _prediction_boxes(dataset: dict, predictions: dict) -> list[dict]:
    """The predictions of ``dataset``'s images as annotations (``score`` kept)."""
    out = []
    for image in dataset["images"]:
        for p in predictions.get(str(image["id"]), []):
            w, h = p["bbox"][2], p["bbox"][3]
            ann = {"image_id": image["id"], "category_id": p["category_id"], "bbox": p["bbox"]}
            out.append(
                {**ann, "id": len(out) + 1, "area": w * h, "iscrowd": 0, "score": p["score"]}
            )
    return out


def _merge(into: dict | None, part: dict) -> dict:
    """Images and annotations of two subsets of one dataset (distinct image ids)."""
    if into is None:
        return part
    offset = max((a["id"] for a in into["annotations"]), default=0)
    anns = [{**a, "id": a["id"] + offset} for a in part["annotations"]]
    return {
        **into,
        "images": into["images"] + part["images"],
        "annotations": into["annotations"] + anns,
    }
