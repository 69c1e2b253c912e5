"""Several seeds of one recipe, summarised: mean ± sd per metric over DVC experiments.

Queue the runs with DVC (``dvc exp run --queue -S seed=0,1,2`` then ``dvc queue start``);
:func:`seeds_summary` reads DVC's own experiment table (``dvc exp show --json``, run as a
command: the library does not import DVC) and summarises the finished experiments: per
metric the count, mean, sample standard deviation (n - 1) and each run's value next to its
``--param`` value. Metrics are looked up by key in every metrics file of an experiment
(nested keys dotted: ``f1_best.f1``); the first file that has the key wins, in the order
DVC lists them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from detflow.core.errors import DataError

DEFAULT_METRICS = ("map50", "map50_95", "f1", "val_map50")


def exp_show(repo: str | Path = ".") -> list:
    """``dvc exp show --json`` in ``repo``, parsed."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DataError(f"{repo}: dvc exp show failed: {result.stderr.strip()[-300:]}")
    return json.loads(result.stdout)


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in (data or {}).items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def experiment_rows(shown: list) -> list[dict]:
    """Every experiment of ``dvc exp show --json``: ``{"name", "state", "params", "metrics"}``
    (params of ``params.yaml`` and metrics of every file, flattened; first file wins)."""
    rows = []
    for baseline in shown:
        for group in baseline.get("experiments") or []:
            state = (group.get("executor") or {}).get("state")
            for rev in group.get("revs") or []:
                data = rev.get("data") or {}
                params = _flat(((data.get("params") or {}).get("params.yaml") or {}).get("data"))
                metrics: dict = {}
                for file_data in (data.get("metrics") or {}).values():
                    for key, value in _flat(file_data.get("data")).items():
                        metrics.setdefault(key, value)
                name = rev.get("name") or rev.get("rev")
                rows.append({"name": name, "state": state, "params": params, "metrics": metrics})
    return rows


def seeds_summary(shown: list, *, metrics=DEFAULT_METRICS, param: str = "seed", names=None) -> dict:
    """Mean ± sd per metric over the finished experiments (those with any of ``metrics``;
    only ``names`` when given): ``{"runs": [{"name", param, metric: value}], "metrics":
    {metric: {"n", "mean", "sd", "values"}}}``; sd is None for a single run."""
    rows = [r for r in experiment_rows(shown) if r["state"] in (None, "success")]
    if names:
        rows = [r for r in rows if r["name"] in set(names)]
    rows = [r for r in rows if any(_number(r["metrics"].get(m)) is not None for m in metrics)]
    if not rows:
        raise DataError(
            "no finished experiment with these metrics in `dvc exp show` "
            "(queue runs with `dvc exp run --queue -S seed=0,1,2`, then `dvc queue start`)"
        )
    rows.sort(key=lambda r: (str(r["params"].get(param)), r["name"]))
    runs = [
        {"name": r["name"], param: r["params"].get(param)}
        | {m: _number(r["metrics"].get(m)) for m in metrics}
        for r in rows
    ]
    summary = {}
    for metric in metrics:
        values = [run[metric] for run in runs if run[metric] is not None]
        summary[metric] = _stats(values)
    return {"param": param, "runs": runs, "metrics": summary}


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _stats(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n if n else None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd, "values": values}


def markdown(summary: dict) -> str:
    """The summary as two markdown tables: mean ± sd per metric, then each run."""
    lines = ["| metric | n | mean ± sd |", "|---|---|---|"]
    for metric, s in summary["metrics"].items():
        if s["n"]:
            spread = f" ± {s['sd']:.4f}" if s["sd"] is not None else ""
            lines.append(f"| {metric} | {s['n']} | {s['mean']:.4f}{spread} |")
    metrics = list(summary["metrics"])
    lines += ["", "| experiment | " + " | ".join([summary["param"], *metrics]) + " |"]
    lines.append("|---" * (len(metrics) + 2) + "|")
    for run in summary["runs"]:
        cells = [str(run[summary["param"]])] + [
            "" if run[m] is None else f"{run[m]:.4f}" for m in metrics
        ]
        lines.append(f"| {run['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
