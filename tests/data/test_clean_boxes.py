"""clean's box checks (detflow.data.clean_boxes): reasons in input order, and the duplicate
check, computed in blocks of IoU rows, equal to checking each box against the kept ones."""

from collections import Counter

import numpy as np

from detflow.core.boxes import box_iou
from detflow.data.clean import CleanPolicy
from detflow.data.clean_boxes import IOU_ROWS, check_boxes


class _Log:
    def __init__(self):
        self.drops, self.modified = [], Counter()

    def drop_box(self, image, ann, reason):
        self.drops.append((ann["id"], reason))


def _anns(xywh_list, categories=None):
    categories = categories or [1] * len(xywh_list)
    return [
        {"id": k + 1, "category_id": c, "bbox": list(b)}
        for k, (b, c) in enumerate(zip(xywh_list, categories, strict=True))
    ]


def _check(anns, *, width=1000, height=1000, orientation=1, policy=None):
    log = _Log()
    kept = check_boxes(
        anns,
        {"width": width, "height": height},
        orientation=orientation,
        size=(width, height),
        policy=policy or CleanPolicy(),
        log=log,
        categories={1, 2},
    )
    return kept, log


def test_every_reason_in_input_order_and_clipped_counted():
    anns = _anns(
        [
            (10, 10, 20, 20),  # kept
            ("x", 0, 1, 1),  # non_numeric
            (10, 10, 20, 20.1),  # duplicate_box of 1
            (5, 5, float("nan"), 3),  # non_finite
            (-3, 10, 20, 20),  # clipped, kept
            (990, 10, 30, 30),  # out_of_bounds (beyond the 4 px tolerance)
            (50, 50, 0, 5),  # non_positive_size
            (-3, 60, 4, 20),  # clipped to 1 px wide: too_small
        ]
    )
    anns.insert(2, {"id": 99, "category_id": 7, "bbox": [1, 1, 5, 5]})  # unknown_class
    kept, log = _check(anns)
    assert log.drops == [
        (2, "non_numeric"),
        (99, "unknown_class"),
        (3, "duplicate_box"),
        (4, "non_finite"),
        (6, "out_of_bounds"),
        (7, "non_positive_size"),
        (8, "too_small"),
    ]
    assert [a["id"] for a, _ in kept] == [1, 5]
    assert kept[1][1] == (0.0, 10.0, 17.0, 30.0)
    assert log.modified["clipped"] == 2  # box 5, and box 8 before it was too small


def test_duplicates_across_iou_blocks_equal_the_box_by_box_check():
    rng = np.random.default_rng(0)
    count = 2 * IOU_ROWS + 50
    xy = rng.uniform(0, 900, (count, 2))
    xywh = np.concatenate([xy, np.full((count, 2), 60.0)], axis=1)
    for k in range(0, count, 7):  # near copies of earlier boxes, some of them across blocks
        xywh[k] = xywh[rng.integers(0, k)] + [0.5, 0, 0, 0] if k else xywh[k]
    categories = [1 + (k % 3 == 0) for k in range(count)]
    kept, log = _check(_anns(xywh.tolist(), categories))

    expected, kept_boxes = [], []  # the definition: each box against the kept ones before it
    for k in range(count):
        xyxy = [xywh[k][0], xywh[k][1], xywh[k][0] + 60, xywh[k][1] + 60]
        same = [b for c, b in kept_boxes if c == categories[k]]
        if same and box_iou([xyxy], same).max() > 0.95:
            continue
        kept_boxes.append((categories[k], xyxy))
        expected.append(k + 1)
    assert [a["id"] for a, _ in kept] == expected
    assert len(log.drops) == count - len(expected) > 0
    assert {reason for _, reason in log.drops} == {"duplicate_box"}


def test_no_duplicate_check_when_the_limit_is_none():
    anns = _anns([(10, 10, 20, 20)] * 3)
    kept, log = _check(anns, policy=CleanPolicy(duplicate_box_iou=None))
    assert len(kept) == 3 and log.drops == []


def test_exif_orientation_maps_the_boxes():
    # orientation 6 (rotate 90 CW on display): a stored 100 x 50 image shows as 50 x 100
    anns = _anns([(10, 5, 20, 10)])
    log = _Log()
    kept = check_boxes(
        anns,
        {"width": 100, "height": 50},
        orientation=6,
        size=(50, 100),
        policy=CleanPolicy(),
        log=log,
        categories={1},
    )
    assert kept[0][1] == (35.0, 10.0, 45.0, 30.0) and log.drops == []
