"""split: seeded, group-aware train/val/test split of the canonical dataset.

All images sharing a ``group`` land in one split, so burst shots and near-duplicates cannot
leak between training and test. The same inputs and seed give byte-identical outputs.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

from detflow import manifest
from detflow.errors import ConfigError, DataError
from detflow.files import atomic_dir

SPLITS = ("train", "val", "test")


def check_ratios(ratios: dict) -> dict[str, float]:
    """Validate ``{train, val, test}`` ratios: numbers >= 0 that sum to 1."""
    out = {}
    for name in SPLITS:
        value = ratios.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"split.{name}={value!r} must be a number >= 0")
        out[name] = float(value)
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise ConfigError(f"split ratios {out} sum to {sum(out.values()):g}; they must sum to 1")
    return out


def assign_groups(groups: dict[str, int], *, ratios: dict[str, float], seed: int) -> dict:
    """Assign each group (name → image count) to a split: seeded order, largest deficit first."""
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    total = sum(groups.values())
    filled = dict.fromkeys(SPLITS, 0)
    assignment = {}
    for group in order:
        deficits = {s: ratios[s] * total - filled[s] for s in SPLITS if ratios[s] > 0}
        chosen = max(deficits, key=lambda s: (deficits[s] / (ratios[s] * total), -SPLITS.index(s)))
        assignment[group] = chosen
        filled[chosen] += groups[group]
    return assignment


def split_dataset(*, in_json: str | Path, out_dir: str | Path, ratios: dict, seed: int) -> dict:
    """Write ``out_dir/{train,val,test}.json`` (images stay in the input's folder); report."""
    ratios = check_ratios(ratios)
    dataset = manifest.load_dataset(in_json)
    sizes = Counter(im["group"] for im in dataset["images"])
    assignment = assign_groups(dict(sizes), ratios=ratios, seed=seed)
    members = defaultdict(list)
    for image in dataset["images"]:
        members[assignment[image["group"]]].append(image["id"])
    for name in SPLITS:
        if ratios[name] > 0 and not members[name]:
            raise DataError(
                f"{in_json}: split '{name}' would be empty ({len(sizes)} groups); "
                "add data or change the split ratios"
            )
    images = manifest.image_dir(in_json, dataset)
    report = {"groups": len(sizes), "images": len(dataset["images"])}
    with atomic_dir(out_dir) as tmp:
        for name in SPLITS:
            part = manifest.subset(dataset, members[name])
            manifest.save_dataset(part, tmp / f"{name}.json", image_dir=images)
            report[name] = _summary(part)
    return report


def _summary(part: dict) -> dict:
    counts = Counter(a["category_id"] for a in part["annotations"])
    names = manifest.class_names(part)
    with_boxes = {a["image_id"] for a in part["annotations"]}
    return {
        "images": len(part["images"]),
        "boxes": len(part["annotations"]),
        "negatives": len(part["images"]) - len(with_boxes),
        "groups": len({im["group"] for im in part["images"]}),
        "class_counts": {n: counts.get(i + 1, 0) for i, n in enumerate(names)},
    }
