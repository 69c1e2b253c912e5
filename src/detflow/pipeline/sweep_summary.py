"""Sweep results: one record per job of a sweep, a summary table over them, and the best job
as a ready ``dvc exp run -S …`` line.

A stage run in a sweep writes :data:`RESULT_FILE` in its job folder (:func:`write_job_result`);
at the end of the sweep :func:`summarize_sweep` gathers them, whatever launcher ran the jobs
(in-process, joblib workers or SLURM nodes): the folder is the only thing they share.
"""

from __future__ import annotations

import csv
import math
import shlex
from dataclasses import dataclass
from pathlib import Path

from detflow.core.errors import ConfigError, DataError, require_choice
from detflow.core.files import atomic_file, read_json, write_json

RESULT_FILE = "sweep_result.json"
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class SweepSummary:
    """The written table files, the jobs best first, and the best job's ``dvc exp run`` line
    (None when no job has an objective value)."""

    csv_path: Path
    markdown_path: Path
    rows: list[dict]
    best_command: str | None


def write_job_result(
    *, job_dir: str | Path, job: int, overrides: list[str], summary: dict, objective: str | None
) -> dict:
    """Write one job's overrides, summary and objective value to ``job_dir/RESULT_FILE``;
    return the record. A non-finite number (NaN, inf) is recorded as None (no value)."""
    if objective is not None and objective not in summary:
        raise ConfigError(f"objective {objective!r} is not in the stage's summary {list(summary)}")
    summary = _finite(summary)
    value = None if objective is None else summary[objective]
    record = {
        "job": job,
        "overrides": list(overrides),
        "objective": objective,
        "value": None if value is None else float(value),
        "summary": summary,
    }
    write_json(Path(job_dir) / RESULT_FILE, record)
    return record


def job_result(
    *,
    job_dir: str | Path,
    job: int,
    overrides: list[str],
    summary: dict,
    objective: str | None,
    rank: int,
):
    """What a sweep job returns to the sweeper: the objective's value, or the summary when
    the stage has none; rank 0 of a distributed job also records it
    (:func:`write_job_result`)."""
    if rank == 0:
        record = write_job_result(
            job_dir=job_dir, job=job, overrides=overrides, summary=summary, objective=objective
        )
        return summary if objective is None else record["value"]
    return summary if objective is None else float(summary[objective])


def read_job_results(sweep_dir: str | Path) -> list[dict]:
    """Every job record under ``sweep_dir`` (any depth), in job order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DataError(f"{sweep_dir}: no such sweep folder")
    records = [read_json(path) for path in sweep_dir.rglob(RESULT_FILE)]
    return sorted(records, key=lambda record: record["job"])


def summarize_sweep(*, sweep_dir: str | Path, direction: str = "maximize") -> SweepSummary:
    """Write ``summary.csv`` and ``summary.md`` in ``sweep_dir``: one row per job, its overrides
    and scalar results, sorted best first by the jobs' objective (``direction``)."""
    require_choice("direction", direction, DIRECTIONS)
    records = read_job_results(sweep_dir)
    if not records:
        raise DataError(f"{sweep_dir}: no {RESULT_FILE} in any job folder (did a job finish?)")
    records = _sorted_by_objective(records, direction)
    rows = [_row(record) for record in records]
    columns = _columns(records, rows)
    sweep_dir = Path(sweep_dir)
    csv_path, markdown_path = sweep_dir / "summary.csv", sweep_dir / "summary.md"
    _write_csv(csv_path, columns, rows)
    with atomic_file(markdown_path) as tmp:
        tmp.write_text(markdown_table(columns, rows))
    best = records[0]
    command = dvc_exp_command(best["overrides"]) if best["value"] is not None else None
    return SweepSummary(csv_path, markdown_path, rows, command)


def dvc_exp_command(overrides: list[str]) -> str:
    """The ``dvc exp run`` line that sets ``overrides`` (Hydra syntax, group swaps included)."""
    return " ".join(["dvc exp run", *(f"-S {shlex.quote(o)}" for o in overrides)])


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    """A GitHub markdown table of ``rows`` (dicts) in ``columns`` order; floats to 4 digits."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _finite(obj):
    """``obj`` (JSON-like) with non-finite floats replaced by None."""
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(value) for value in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _sorted_by_objective(records: list[dict], direction: str) -> list[dict]:
    sign = -1.0 if direction == "maximize" else 1.0

    def key(record: dict) -> tuple:
        value = record["value"]
        missing = value is None
        return (missing, 0.0 if missing else sign * value, record["job"])

    return sorted(records, key=key)


def _row(record: dict) -> dict:
    row = {"job": record["job"]}
    for override in record["overrides"]:
        key, _, value = override.partition("=")
        row[key.lstrip("+~")] = value
    if record["objective"] is not None:
        row[record["objective"]] = record["value"]
    for key, value in record["summary"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            row.setdefault(key, value)
    return row


def _columns(records: list[dict], rows: list[dict]) -> list[str]:
    """job, then the overridden keys, then the objective, then the other results."""
    overridden = {o.partition("=")[0].lstrip("+~") for r in records for o in r["overrides"]}
    objectives = {r["objective"] for r in records if r["objective"] is not None}
    first = ["job", *sorted(overridden), *sorted(objectives)]
    rest = sorted({key for row in rows for key in row} - set(first))
    return first + rest


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with atomic_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")
