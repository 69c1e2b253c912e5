"""Merging tile detections (detflow.deploy.tile_merge): class-aware, never within a tile, and
the grid search gives exactly what comparing every pair gives."""

from __future__ import annotations

import numpy as np
import pytest

from detflow.core.boxes import box_ios, box_iou
from detflow.core.errors import ConfigError
from detflow.deploy.tile_merge import merge_detections


def test_merge_is_class_aware_and_never_merges_within_a_tile():
    boxes = [[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]]
    out = merge_detections(
        boxes, [1, 1, 2], [0.9, 0.8, 0.7], sources=[0, 0, 1], merge="nms", threshold=0.5
    )
    assert out["labels"].tolist() == [1, 1, 2]  # one tile's two boxes; another class
    out = merge_detections(
        boxes, [1, 1, 1], [0.9, 0.8, 0.7], sources=[0, 1, 2], merge="nms", threshold=0.5
    )
    assert out["scores"].tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(out["boxes"], [[0, 0, 10, 10]])


def test_wbf_is_the_score_weighted_mean_scored_by_the_best():
    out = merge_detections(
        [[0, 0, 10, 10], [2, 0, 12, 10]], [1, 1], [0.75, 0.25], merge="wbf", threshold=0.5
    )
    np.testing.assert_allclose(out["boxes"], [[0.5, 0, 10.5, 10]])
    assert out["scores"].tolist() == [0.75]


def test_nothing_to_merge_and_bad_choices():
    empty = merge_detections(np.zeros((0, 4)), [], [], merge="wbf", threshold=0.5)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].dtype == np.int64
    with pytest.raises(ConfigError, match="slicing.metric"):
        merge_detections([[0, 0, 1, 1]], [1], [1.0], merge="nms", metric="giou", threshold=0.5)


def _every_pair(boxes, labels, scores, sources, *, merge, metric, threshold):
    """The same clustering, comparing each box with every cluster head."""
    overlap = box_ios if metric == "ios" else box_iou
    out = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        heads, members, sums, weights = [], [], [], []
        for i in idx:
            match = overlap(boxes[i], boxes[heads])[0] if heads else np.zeros(0)
            ok = [k for k in range(len(heads)) if match[k] > threshold]
            ok = [k for k in ok if sources[i] not in members[k]]
            if not ok:
                heads.append(i), members.append({sources[i]})
                sums.append(boxes[i] * scores[i]), weights.append(scores[i])
                continue
            k = max(ok, key=lambda j: (match[j], -j))
            members[k].add(sources[i])
            sums[k] = sums[k] + boxes[i] * scores[i]
            weights[k] += scores[i]
        for k, head in enumerate(heads):
            box = boxes[head] if merge == "nms" else sums[k] / weights[k]
            out.append((scores[head], label, *box))
    return sorted(out, key=lambda row: -row[0])


@pytest.mark.parametrize(("merge", "metric"), [("nms", "ios"), ("wbf", "ios"), ("nms", "iou")])
def test_the_grid_search_equals_comparing_every_pair(merge, metric):
    rng = np.random.default_rng(5)
    n = 600
    xy = rng.uniform(0, 1000, size=(n, 2))
    wh = np.where(rng.uniform(size=(n, 1)) < 0.02, 600, rng.uniform(5, 40, size=(n, 2)))
    boxes = np.hstack([xy, xy + wh])  # a few boxes span many grid cells
    boxes = np.vstack([boxes, boxes[:200] + rng.uniform(-3, 3, size=(200, 4))])
    labels = rng.integers(1, 3, size=len(boxes))
    scores = rng.uniform(0.05, 1, size=len(boxes))
    sources = rng.integers(0, 6, size=len(boxes))
    out = merge_detections(
        boxes, labels, scores, sources=sources, merge=merge, metric=metric, threshold=0.5
    )
    expected = _every_pair(
        boxes, labels, scores, sources, merge=merge, metric=metric, threshold=0.5
    )
    assert 300 < len(expected) < len(boxes)  # the data has merges and keeps
    got = np.column_stack([out["scores"], out["labels"], out["boxes"]])
    np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=1e-3)
