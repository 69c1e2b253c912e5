"""Merging the detections of overlapping tiles into one set of boxes (NumPy, no torch).

An object near a seam is seen by two to four tiles (and by the whole image when it is
added): whole in some, cut by the tile edge in others. :func:`merge_detections` clusters the
detections of one class, best score first: a detection joins the cluster whose best box it
overlaps most (above ``threshold``) among clusters holding no detection of its own tile —
the model already separated the boxes of one tile — or starts a cluster. Each cluster gives
one box:

- ``nms``: its best box;
- ``wbf``: weighted box fusion (Solovyev et al., 2021): the score-weighted mean of its
  boxes; the score is the best one (``ensemble-boxes``' ``conf_type="max"``; ensemble-boxes
  is not a dependency here, and its model-count rescaling does not fit tiles).

Overlap is ``ios`` (intersection over the smaller box: a cut view lies inside the whole
one, whose IoU with it is only the cut share) or ``iou``. Clusters are found through a grid
of cells, so time and memory grow with the detections near each box, not with all pairs.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from detflow.core.boxes import box_ios, box_iou
from detflow.core.errors import require_choice

MERGES = ("nms", "wbf")
METRICS = ("ios", "iou")
MAX_CELLS = 16  # a box spanning more grid cells is checked against every box instead


def merge_detections(
    boxes, labels, scores, *, sources=None, merge: str, metric: str = "ios", threshold: float
) -> dict:
    """Merge the detections of all tiles of one image. ``boxes``: ``[N, 4]`` xyxy pixels of
    the image, ``labels`` ``[N]``, ``scores`` ``[N]``; ``sources`` ``[N]``: the tile each
    came from (None: each its own). Class-aware: boxes of two labels never merge. Returns
    ``{"boxes" [K, 4] float32, "labels" [K] int64, "scores" [K] float32}``, best first."""
    require_choice("slicing.merge", merge, MERGES)
    require_choice("slicing.metric", metric, METRICS)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    sources = np.arange(len(boxes)) if sources is None else np.asarray(sources).reshape(-1)
    overlap = box_ios if metric == "ios" else box_iou
    parts = []
    for label in np.unique(labels):
        of_class = np.flatnonzero(labels == label)
        order = of_class[np.argsort(-scores[of_class], kind="stable")]
        fused, best = _clusters(
            boxes[order], scores[order], sources[order], overlap, threshold, merge
        )
        parts.append((fused, np.full(len(best), label, dtype=np.int64), best))
    if not parts:
        return _empty()
    b, lab, s = (np.concatenate([p[k] for p in parts]) for k in range(3))
    order = np.argsort(-s, kind="stable")
    return {
        "boxes": b[order].astype(np.float32),
        "labels": lab[order],
        "scores": s[order].astype(np.float32),
    }


def _clusters(boxes, scores, sources, overlap, threshold: float, merge: str):
    """Greedy clusters of one class's boxes (sorted best score first). Returns ``([C, 4]
    boxes, [C] best scores)``."""
    heads = _HeadIndex(boxes)
    sums, weights = np.zeros((len(boxes), 4)), np.zeros(len(boxes))
    head_of: list[int] = []  # cluster → index of its best box
    members: list[set] = []  # cluster → the tiles it has a box of
    for i, (box, score, source) in enumerate(zip(boxes, scores, sources, strict=True)):
        near = [k for k in heads.near(box) if source not in members[k]]
        match = overlap(box, boxes[[head_of[k] for k in near]])[0] if near else np.zeros(0)
        if not len(match) or match.max() <= threshold:
            k = len(head_of)
            head_of.append(i)
            members.append({source})
            heads.add(k, box)
        else:
            k = near[int(match.argmax())]
            members[k].add(source)
        sums[k] += box * score
        weights[k] += score
    count = len(head_of)
    best = scores[head_of]
    if merge == "nms":
        return boxes[head_of], best
    safe = np.where(weights[:count] > 0, weights[:count], 1)[:, None]
    fused = np.where(weights[:count, None] > 0, sums[:count] / safe, boxes[head_of])
    return fused, best


class _HeadIndex:
    """Cluster heads by the grid cells their boxes cover (cells of twice the median box
    side), to find the heads near a box without scanning them all."""

    def __init__(self, boxes: np.ndarray):
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        self.cell = max(16.0, 2 * float(np.median(sides))) if len(sides) else 16.0
        self.cells: dict[tuple, list[int]] = defaultdict(list)
        self.large: list[int] = []
        self.count = 0

    def _span(self, box) -> tuple[range, range] | None:
        x0, y0, x1, y1 = (int(v // self.cell) for v in box)
        if (x1 - x0 + 1) * (y1 - y0 + 1) > MAX_CELLS:
            return None
        return range(x0, x1 + 1), range(y0, y1 + 1)

    def add(self, k: int, box) -> None:
        self.count += 1
        span = self._span(box)
        if span is None:
            self.large.append(k)
            return
        for cx in span[0]:
            for cy in span[1]:
                self.cells[cx, cy].append(k)

    def near(self, box) -> list[int]:
        """Heads whose cells meet ``box``'s, in cluster order (every head for a large box)."""
        span = self._span(box)
        if span is None:
            return list(range(self.count))
        found = set(self.large)
        for cx in span[0]:
            for cy in span[1]:
                found.update(self.cells.get((cx, cy), ()))
        return sorted(found)


def _empty() -> dict:
    return {
        "boxes": np.zeros((0, 4), dtype=np.float32),
        "labels": np.zeros(0, dtype=np.int64),
        "scores": np.zeros(0, dtype=np.float32),
    }
