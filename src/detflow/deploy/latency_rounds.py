"""Latency of several variants measured side by side: the deploy choice is the fastest
accepted variant, and variants a few percent apart (e.g. OpenVINO INT8 and bf16 on a CPU with
AMX) would otherwise be ranked by whichever ran while the machine was quieter.

:func:`time_in_rounds` times every detector on the same images in rounds, the order of the
detectors reversed every other round so none always runs on a warmer cache; a variant's
``latency_ms_p50`` / ``p95`` are the median over rounds of each round's percentile and
``throughput_img_s`` the median of each round's images per second. No torch.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from detflow.evaluate.metrics import latency_summary


def time_in_rounds(detectors: dict, images: list[np.ndarray], *, rounds: int) -> dict[str, dict]:
    """name → ``latency_ms_p50``, ``latency_ms_p95``, ``throughput_img_s`` and
    ``latency_rounds`` for each of ``detectors`` (callables on one ``[3, H, W]`` float32
    image) over ``images``, in ``rounds`` interleaved rounds (see the module doc)."""
    names = list(detectors)
    per_round: dict[str, list[list[float]]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            per_round[name].append(_latencies(detectors[name], images))
    return {name: _summary(per_round[name]) for name in names}


def _latencies(detector, images: list[np.ndarray]) -> list[float]:
    """Per-image wall time in ms, one image per call."""
    out = []
    for image in images:
        start = time.perf_counter()
        detector(image)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _summary(rounds: list[list[float]]) -> dict:
    summaries = [latency_summary(latencies) for latencies in rounds]
    return {
        **{key: statistics.median(s[key] for s in summaries) for key in summaries[0]},
        "throughput_img_s": statistics.median(1000 * len(r) / sum(r) for r in rounds),
        "latency_rounds": len(rounds),
    }
