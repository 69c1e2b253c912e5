"""latency_rounds: every detector timed on the same images, order reversed every other round."""

from __future__ import annotations

import numpy as np

from detflow.deploy.latency_rounds import time_in_rounds


def test_rounds_alternate_the_order_and_summarise_each_detector():
    calls = []

    def detector(name):
        return lambda image: calls.append((name, image.shape))

    images = [np.zeros((3, 8, 8), np.float32), np.zeros((3, 4, 6), np.float32)]
    rows = time_in_rounds({"a": detector("a"), "b": detector("b")}, images, rounds=3)
    names = [name for name, _ in calls]
    assert names == ["a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b"]
    assert [shape for _, shape in calls[:2]] == [(3, 8, 8), (3, 4, 6)]  # every image, in order
    for row in rows.values():
        assert row["latency_rounds"] == 3
        assert 0 <= row["latency_ms_p50"] <= row["latency_ms_p95"]
        assert row["throughput_img_s"] > 0
