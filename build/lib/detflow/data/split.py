"""split: seeded, group-aware, stratified train/val/test split of the canonical dataset.

All images sharing a ``group`` land in one split, so burst shots, video frames and
near-duplicates cannot leak between training and test. Groups are assigned by iterative
stratification (Sechidis et al., 2011, on groups instead of images): the rarest label is
placed first, each of its groups going to the split that still needs that label most, so
class presence and negatives (images without boxes) follow the target ratios. The same
inputs and seed give byte-identical outputs.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from detflow.core.errors import ConfigError, DataError, require_positive
from detflow.core.faults import maybe_kill
from detflow.core.files import atomic_dir
from detflow.core.options import ConfigOptions
from detflow.data import manifest

SPLITS = ("train", "val", "test")
MODES = ("random", "predefined", "kfold")
NEGATIVE = "(negative)"  # pseudo-label: images without boxes, stratified like a class


@dataclass(frozen=True, kw_only=True)
class SplitOptions(ConfigOptions):
    """The validated ``split.*`` (see conf/config.yaml): the mode, seed, ratios and folds."""

    SECTION = "split"

    mode: str = field(default="random", metadata={"choices": MODES})
    seed: int = 0
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    folds: int = 5
    fold: int = 0
    require_all_classes: bool = True

    def check(self) -> None:
        for name in SPLITS:
            require_positive(f"split.{name}", getattr(self, name), allow_zero=True)
        ratios = self.ratios
        if abs(sum(ratios.values()) - 1.0) > 1e-6:
            raise ConfigError(
                f"split ratios {ratios} sum to {sum(ratios.values()):g}; they must sum to 1"
            )
        if self.mode == "kfold":
            if self.folds < 2:
                raise ConfigError(f"split.folds={self.folds!r} must be an integer >= 2")
            if not 0 <= self.fold < self.folds:
                raise ConfigError(
                    f"split.fold={self.fold!r} must be an integer in 0..{self.folds - 1}"
                )

    @property
    def ratios(self) -> dict[str, float]:
        """``{train, val, test}`` shares, as floats."""
        return {name: float(getattr(self, name)) for name in SPLITS}


def group_labels(dataset: dict) -> tuple[dict[str, Counter], dict[str, int]]:
    """Per group: how many of its images hold each class (and ``NEGATIVE``); image counts."""
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    boxes = manifest.annotations_by_image(dataset)
    labels: dict[str, Counter] = defaultdict(Counter)
    sizes: Counter = Counter()
    for image in dataset["images"]:
        present = {names[a["category_id"]] for a in boxes.get(image["id"], [])}
        labels[image["group"]].update(present or {NEGATIVE})
        sizes[image["group"]] += 1
    return dict(labels), dict(sizes)


def stratify(
    labels: dict[str, Counter], sizes: dict[str, int], *, ratios: dict[str, float], seed: int
) -> dict[str, str]:
    """Assign each group to a split (a key of ``ratios``); rarest label first, each group to
    the split lacking that label, else needing it most, then needing images most."""
    splits = [s for s, r in ratios.items() if r > 0]
    order = sorted(labels)
    random.Random(seed).shuffle(order)
    totals = sum(labels.values(), Counter())
    need = {s: {label: ratios[s] * n for label, n in totals.items()} for s in splits}
    need_images = {s: ratios[s] * sum(sizes.values()) for s in splits}
    placed = {s: Counter() for s in splits}
    assignment: dict[str, str] = {}
    while len(assignment) < len(order):
        remaining = [g for g in order if g not in assignment]
        counts = sum((labels[g] for g in remaining), Counter())
        label = min(counts, key=lambda lab: (counts[lab], lab))
        for group in (g for g in remaining if labels[g][label]):
            lacking = [s for s in splits if placed[s][label] == 0] or splits
            chosen = max(lacking, key=lambda s: (need[s][label], need_images[s], -splits.index(s)))
            assignment[group] = chosen
            placed[chosen].update(labels[group])
            need_images[chosen] -= sizes[group]
            for name, n in labels[group].items():
                need[chosen][name] -= n
    return assignment


def assign_groups(dataset: dict, options: SplitOptions) -> dict[str, str]:
    """Group → split name for ``options.mode``: ``random`` (stratified), ``predefined`` (the
    images' own ``split``), or ``kfold`` (test carved first, then fold ``fold`` of ``folds``
    is val)."""
    ratios, seed, folds, fold = options.ratios, options.seed, options.folds, options.fold
    labels, sizes = group_labels(dataset)
    if options.mode == "predefined":
        return _predefined(dataset)
    if options.mode == "random":
        return stratify(labels, sizes, ratios=ratios, seed=seed)
    outer = stratify(
        labels, sizes, ratios={"rest": 1 - ratios["test"], "test": ratios["test"]}, seed=seed
    )
    rest = [g for g, s in outer.items() if s == "rest"]
    inner = stratify(
        {g: labels[g] for g in rest},
        {g: sizes[g] for g in rest},
        ratios={f"fold{k}": 1 / folds for k in range(folds)},
        seed=seed,
    )
    return {
        g: ("test" if s == "test" else "val" if inner[g] == f"fold{fold}" else "train")
        for g, s in outer.items()
    }


def split_dataset(*, in_json: str | Path, out_dir: str | Path, options: SplitOptions) -> dict:
    """Write ``out_dir/{train,val,test}.json`` (images stay in the input's folder); report."""
    ratios, mode = options.ratios, options.mode
    dataset = manifest.load_dataset(in_json)
    unlabelled = [im["id"] for im in dataset["images"] if im.get("labelled") is False]
    if unlabelled:  # e.g. video frames kept for later labelling: not known negatives
        keep = {im["id"] for im in dataset["images"]} - set(unlabelled)
        dataset = manifest.subset(dataset, keep)
    expected = [s for s in SPLITS if ratios[s] > 0] if mode != "kfold" else list(SPLITS)
    if options.require_all_classes and mode != "predefined":
        _check_classes_placeable(dataset, len(expected))
    by_group = assign_groups(dataset, options)
    members = defaultdict(list)
    for image in dataset["images"]:
        members[image.get("split") if mode == "predefined" else by_group[image["group"]]].append(
            image["id"]
        )
    for name in expected:
        if not members[name]:
            raise DataError(
                f"{in_json}: split '{name}' would be empty "
                f"({len(by_group)} groups); add data or change split.* ratios"
            )
    images = manifest.image_dir(in_json, dataset)
    with atomic_dir(out_dir) as tmp:
        parts = {}
        for name in SPLITS:
            parts[name] = manifest.subset(dataset, members[name])
            manifest.save_dataset(parts[name], tmp / f"{name}.json", image_dir=images)
            maybe_kill("split.output")
    return {**_report(dataset, parts, ratios, mode), "unlabelled_held_out": len(unlabelled)}


def _predefined(dataset: dict) -> dict[str, str]:
    missing = [im["source"] for im in dataset["images"] if im.get("split") not in SPLITS]
    if missing:
        raise DataError(
            f"{len(missing)} images have no predefined split (e.g. {missing[0]}); "
            "use split.mode=random"
        )
    return {im["group"]: im["split"] for im in dataset["images"]}


def _check_classes_placeable(dataset: dict, splits: int) -> None:
    labels, _ = group_labels(dataset)
    groups_with = Counter(label for counter in labels.values() for label in counter)
    for category in sorted(dataset["categories"], key=lambda c: c["id"]):
        have = groups_with.get(category["name"], 0)
        if have < splits:
            raise DataError(
                f"class '{category['name']}' is in {have} group(s), fewer than the {splits} "
                "splits; add data, drop or merge the class, or set split.require_all_classes=false"
            )


def _report(dataset: dict, parts: dict, ratios: dict, mode: str) -> dict:
    labels, _ = group_labels(dataset)
    totals = sum(labels.values(), Counter())
    report = {"mode": mode, "groups": len(labels), "images": len(dataset["images"])}
    deviation = 0.0
    for name, part in parts.items():
        report[name] = _summary(part)
        present = report[name]["images_with_class"]
        if mode == "random":
            for label, total in totals.items():
                share = present.get(label, 0) / total
                deviation = max(deviation, abs(share - ratios[name]))
    side = defaultdict(set)
    for name, part in parts.items():
        for image in part["images"]:
            side[image["group"]].add(name)
    report["groups_crossing_splits"] = sum(len(s) > 1 for s in side.values())
    report["max_class_share_deviation_pp"] = round(100 * deviation, 3)
    return report


def _summary(part: dict) -> dict:
    labels, _ = group_labels(part) if part["images"] else ({}, {})
    with_boxes = {a["image_id"] for a in part["annotations"]}
    return {
        "images": len(part["images"]),
        "boxes": len(part["annotations"]),
        "negatives": len(part["images"]) - len(with_boxes),
        "groups": len(labels),
        "class_counts": manifest.class_counts(part),
        "images_with_class": dict(sorted(sum(labels.values(), Counter()).items())),
    }
