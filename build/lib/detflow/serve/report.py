"""``detflow serve-report``: the request logs of ``detflow serve`` as a side-by-side table.

Per model (shadows included): requests, latency p50/p95 (the ONNX Runtime run), detections
per image, mean score, the score quartiles over images, and agreement with the model that
answered the same requests: the share of shared ``request_id`` s where both found the same
classes the same number of times (a shadow is compared with the model that answered; two
answering models never share a request, so they show ``-``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from detflow.core.errors import DataError


def read_logs(paths: list[str | Path]) -> list[dict]:
    """The records of the JSON Lines files (rotated ones too: give ``requests.jsonl*``);
    lines that are not JSON objects are skipped."""
    records = []
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise DataError(f"{path}: cannot read the request log ({exc.strerror})") from exc
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "model" in record:
                records.append(record)
    return records


def summarize(records: list[dict]) -> list[dict]:
    """One row per model, in order of first appearance."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    answered: dict[str, dict] = {}
    for record in records:
        by_model[record["model"]].append(record)
        if not record.get("shadow"):
            answered[record.get("request_id")] = record
    rows = []
    for model, items in by_model.items():
        latency = np.array([r["latency_ms"] for r in items], float)
        counts = np.array([r["detections"] for r in items], float)
        scores = np.array([r["mean_score"] for r in items if r.get("mean_score") is not None])
        shadow = any(r.get("shadow") for r in items)
        pairs = [(r, answered.get(r.get("request_id"))) for r in items] if shadow else []
        pairs = [(r, other) for r, other in pairs if other is not None]
        agree = [sorted(r["classes"]) == sorted(o["classes"]) for r, o in pairs]
        rows.append(
            {
                "model": model,
                "shadow": shadow,
                "model_ids": sorted({r.get("model_id", "?") for r in items}),
                "requests": len(items),
                "latency_p50_ms": float(np.percentile(latency, 50)),
                "latency_p95_ms": float(np.percentile(latency, 95)),
                "detections_per_image": float(counts.mean()),
                "mean_score": float(scores.mean()) if len(scores) else None,
                "score_quartiles": [float(q) for q in np.percentile(scores, (25, 50, 75))]
                if len(scores)
                else None,
                "compared": len(pairs),
                "agreement": float(np.mean(agree)) if agree else None,
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| model | role | requests | p50 ms | p95 ms | detections/image | mean score "
        "| score q25/q50/q75 | agreement |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        quartiles = row["score_quartiles"]
        mean = row["mean_score"]
        agreement = (
            "-" if row["agreement"] is None else (f"{row['agreement']:.1%} of {row['compared']}")
        )
        lines.append(
            f"| {row['model']} | {'shadow' if row['shadow'] else 'answers'} | {row['requests']} "
            f"| {row['latency_p50_ms']:.1f} | {row['latency_p95_ms']:.1f} "
            f"| {row['detections_per_image']:.2f} | {'-' if mean is None else f'{mean:.3f}'} "
            f"| {'-' if quartiles is None else '/'.join(f'{q:.2f}' for q in quartiles)} "
            f"| {agreement} |"
        )
    return "\n".join(lines)
