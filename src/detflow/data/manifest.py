"""The canonical dataset every stage reads and writes.

A COCO-format JSON file (``images``, ``annotations`` with ``bbox`` in absolute pixel
``xywh``, ``categories`` with contiguous ids ``1..N``) plus an image folder. Each image also
carries ``source`` (where it came from), ``group`` (images that must stay in one split) and
optionally ``split`` (a source's own predefined split), and ``incomplete`` (why a real
object of it has no box; clean drops or keeps it by ``clean.incomplete_images``). A box may
carry ``ignore``: ``"difficult"`` (VOC) or ``"crowd"`` (COCO, also ``iscrowd: 1``): evaluation
ignores it (neither hit nor miss) and training leaves it out. The image folder is named,
relative to the JSON file, in ``detflow.image_dir``.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path

from detflow.core.errors import DataError
from detflow.core.files import read_json, write_json

SCHEMA = "detflow-dataset-v1"


def new_dataset(*, class_names: list[str]) -> dict:
    """An empty canonical dataset with categories ``1..N`` named by ``class_names``."""
    if len(set(class_names)) != len(class_names) or not class_names:
        raise DataError(f"class names must be unique and non-empty, got {class_names}")
    categories = [{"id": i + 1, "name": str(n)} for i, n in enumerate(class_names)]
    return {"info": {"schema": SCHEMA}, "categories": categories, "images": [], "annotations": []}


def add_image(
    dataset: dict, *, file_name: str, width: int, height: int, source: str, group: str, **extra
) -> int:
    """Append an image record; returns its id (1-based, in insertion order)."""
    image_id = len(dataset["images"]) + 1
    record = {
        "id": image_id,
        "file_name": file_name,
        "width": int(width),
        "height": int(height),
        "source": source,
        "group": group,
    }
    record.update({k: v for k, v in extra.items() if v is not None})
    dataset["images"].append(record)
    return image_id


def add_box(
    dataset: dict, *, image_id: int, category_id: int, xywh, ignore: str | None = None
) -> int:
    """Append an annotation with COCO ``xywh`` pixels; returns its id. ``ignore``: None, or
    ``"difficult"`` / ``"crowd"`` (see :func:`is_ignored`)."""
    x, y, w, h = (float(v) for v in xywh)
    ann_id = len(dataset["annotations"]) + 1
    dataset["annotations"].append(
        {
            "id": ann_id,
            "image_id": int(image_id),
            "category_id": int(category_id),
            "bbox": [x, y, w, h],
            "area": w * h,
            "iscrowd": 1 if ignore == "crowd" else 0,
        }
    )
    if ignore:
        dataset["annotations"][-1]["ignore"] = ignore
    return ann_id


def is_ignored(ann: dict) -> bool:
    """True for a box evaluation ignores and training leaves out (difficult or crowd)."""
    return bool(ann.get("ignore")) or bool(ann.get("iscrowd"))


def subset(dataset: dict, image_ids) -> dict:
    """A copy of ``dataset`` holding only ``image_ids`` and their annotations (ids kept)."""
    keep = set(image_ids)
    out = {k: v for k, v in dataset.items() if k not in ("images", "annotations")}
    out["images"] = [dict(im) for im in dataset["images"] if im["id"] in keep]
    out["annotations"] = [dict(a) for a in dataset["annotations"] if a["image_id"] in keep]
    return out


def save_dataset(dataset: dict, json_path: str | Path, *, image_dir: str | Path) -> None:
    """Write ``dataset`` atomically, recording ``image_dir`` relative to the JSON's folder."""
    json_path = Path(json_path)
    relative = os.path.relpath(Path(image_dir).resolve(), json_path.parent.resolve())
    out = dict(dataset)
    out["detflow"] = {"schema": SCHEMA, "image_dir": Path(relative).as_posix()}
    write_json(json_path, out, expand_depth=2)  # one image or box per line


def load_dataset(json_path: str | Path) -> dict:
    """Read and validate a canonical dataset JSON; DataError names the file and problem."""
    json_path = Path(json_path)
    try:
        dataset = read_json(json_path)
    except FileNotFoundError as exc:
        raise DataError(f"{json_path}: not found; run the stage that writes it") from exc
    except ValueError as exc:
        raise DataError(f"{json_path}: not valid JSON ({exc})") from exc
    _validate(dataset, json_path)
    return dataset


def image_dir(json_path: str | Path, dataset: dict) -> Path:
    """The folder that holds ``dataset``'s images."""
    return Path(json_path).parent / dataset.get("detflow", {}).get("image_dir", "images")


def class_names(dataset: dict) -> list[str]:
    """Class names in category-id order (category id ``k`` is ``names[k - 1]``)."""
    return [c["name"] for c in sorted(dataset["categories"], key=lambda c: c["id"])]


def class_counts(dataset: dict) -> dict[str, int]:
    """Boxes per class name, every class listed (0 when it has none), in id order."""
    counts = Counter(a["category_id"] for a in dataset["annotations"])
    return {name: counts.get(i + 1, 0) for i, name in enumerate(class_names(dataset))}


def annotations_by_image(dataset: dict) -> dict[int, list[dict]]:
    """Map image id → its annotations, in file order."""
    index: dict[int, list[dict]] = defaultdict(list)
    for ann in dataset["annotations"]:
        index[ann["image_id"]].append(ann)
    return index


def _validate(dataset, json_path: Path) -> None:
    if not isinstance(dataset, dict):
        raise DataError(f"{json_path}: expected a COCO JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataError(f"{json_path}: missing list '{key}'; is this a COCO dataset file?")
    ids = sorted(c.get("id") for c in dataset["categories"])
    if ids != list(range(1, len(ids) + 1)):
        raise DataError(f"{json_path}: category ids must be 1..N, got {ids}")
    image_ids = {im.get("id") for im in dataset["images"]}
    for ann in dataset["annotations"]:
        if ann.get("image_id") not in image_ids:
            raise DataError(
                f"{json_path}: annotation {ann.get('id')} names unknown image {ann.get('image_id')}"
            )
