"""clean's grouping: near-duplicates (upright, flipped or turned) and copies named after one
original share a ``group``, so that split keeps them on one side.

Three rules link two images; linked images take the group of the first image of their
cluster (union-find, clusters joined through collect's groups too):

- ``near_duplicate``: upright perceptual hashes within ``clean.near_duplicate_distance``;
- ``turned_near_duplicate``: one image flipped or turned a quarter, half or three quarters
  (any of the 8 orientations of :data:`~detflow.data.near_duplicates.ORIENTATIONS`) is within
  that distance of the other (:func:`~detflow.data.near_duplicates.dihedral_pairs`);
- ``original_name``: both file names carry the same original's name in a pattern of
  :data:`ORIGINAL_NAME_PATTERNS` (Roboflow exports: ``<original>_jpg.rf.<32 hex>.jpg``, one
  file per exported copy, flipped, turned or augmented); a name that matches no pattern
  links nothing.

The report lists every pair with its distance and orientation, counts the links of each rule,
and names each group that clean merged with the rules that merged it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import PurePosixPath

from detflow.data import manifest
from detflow.data.near_duplicates import clusters, dihedral_pairs

# file names that carry the original's name: (tool, pattern with groups "stem" and "ext")
ORIGINAL_NAME_PATTERNS = (
    ("roboflow", re.compile(r"^(?P<stem>.+)_(?P<ext>[A-Za-z0-9]{2,4})\.rf\.[0-9a-f]{32}\.\w+$")),
)
RULES = ("near_duplicate", "turned_near_duplicate", "original_name")


def original_name(source: str) -> str | None:
    """The original's file name carried by the file name of ``source`` (a path with ``/``),
    e.g. ``"IMG_7 2.jpg"`` for ``"train/images/IMG_7 2_jpg.rf.<32 hex>.jpg"``; None when
    the name matches no pattern of :data:`ORIGINAL_NAME_PATTERNS`."""
    name = PurePosixPath(source).name
    for _, pattern in ORIGINAL_NAME_PATTERNS:
        found = pattern.match(name)
        if found:
            return f"{found['stem']}.{found['ext']}"
    return None


def name_links(images: list[dict]) -> list[tuple[int, int]]:
    """``(first, k)`` for each image ``k`` whose original's name (:func:`original_name`) an
    earlier image ``first`` carries too."""
    first_of: dict[str, int] = {}
    links = []
    for index, image in enumerate(images):
        name = original_name(image["source"])
        if name is not None and first_of.setdefault(name, index) != index:
            links.append((first_of[name], index))
    return links


def near_pairs(hashes: list[tuple[int, ...]], distance: int | None) -> list[tuple]:
    """:func:`dihedral_pairs` of the images' 8 hashes each; none when ``distance`` is None."""
    return [] if distance is None else dihedral_pairs(hashes, max_distance=distance)


def merge_groups(images: list[dict], pairs: list[tuple], names: list[tuple[int, int]]) -> dict:
    """Give each image (in place) the group of the first image of its cluster, clusters
    joined by ``pairs`` (``(i, j, distance, orientation)``), ``names`` (``(i, j)``) and the
    images' own groups; return the report part: counts per rule and the merged groups."""
    first_of_group: dict[str, int] = {}
    links = [(first_of_group.setdefault(im["group"], k), k) for k, im in enumerate(images)]
    ruled = [(i, j, _pair_rule(o)) for i, j, _, o in pairs]
    ruled += [(i, j, "original_name") for i, j in names]
    roots = clusters(len(images), links + [(i, j) for i, j, _ in ruled])
    before = [im["group"] for im in images]
    rules: dict[int, set] = defaultdict(set)
    for i, j, rule in ruled:
        if before[i] != before[j]:
            rules[roots[i]].add(rule)
    members: dict[int, list[int]] = defaultdict(list)
    for index, image in enumerate(images):
        image["group"] = images[roots[index]]["group"]
        members[roots[index]].append(index)
    merged = [
        {
            "group": images[root]["group"],
            "groups_in": len({before[k] for k in members[root]}),
            "rules": sorted(rules[root]),
            "images": sorted(images[k]["source"] for k in members[root]),
        }
        for root in sorted(rules)
    ]
    counts = Counter(rule for _, _, rule in ruled)
    return {
        "links_by_rule": {rule: counts[rule] for rule in RULES},
        "groups_merged": len(first_of_group) - len({im["group"] for im in images}),
        "merged_groups": merged,
    }


def _pair_rule(orientation: str) -> str:
    return "near_duplicate" if orientation == "identity" else "turned_near_duplicate"


def pair_listing(images: list[dict], pairs: list[tuple]) -> list[dict]:
    """The report's near-duplicate pairs: ``b`` looks like ``a`` after ``orientation``."""
    return [
        {"a": images[i]["source"], "b": images[j]["source"], "distance": d, "orientation": o}
        for i, j, d, o in pairs
    ]


def drop_cluster_members(out: dict, roots: list[int], log, folder) -> None:
    """Keep only the first image of each near-duplicate cluster (``roots``: each image's
    cluster root index), logging the others as dropped and deleting their files."""
    images, by_image = out["images"], manifest.annotations_by_image(out)
    drop = {images[i]["id"] for i in range(len(images)) if roots[i] != i}
    for i, image in enumerate(images):
        if image["id"] in drop:
            log.drop_image(
                image,
                by_image.get(image["id"], []),
                "near_duplicate",
                f"near-identical to {images[roots[i]]['source']}",
            )
            (folder / image["file_name"]).unlink()
    out["images"] = [im for im in images if im["id"] not in drop]
    out["annotations"] = [a for a in out["annotations"] if a["image_id"] not in drop]
