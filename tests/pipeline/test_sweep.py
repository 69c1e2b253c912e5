"""detflow.pipeline.sweep_summary: job records, the summary table best first, and the
`dvc exp run` line."""

import csv
import shlex

import pytest

from detflow.core.errors import ConfigError, DataError
from detflow.pipeline.sweep_summary import (
    RESULT_FILE,
    dvc_exp_command,
    read_job_results,
    summarize_sweep,
)
from detflow.pipeline.sweep_summary import write_job_result as write


def _sweep(tmp_path, values, objective="val_map50"):
    for job, value in enumerate(values):
        write(
            job_dir=tmp_path / str(job),
            job=job,
            overrides=[f"train.lr={0.01 * (job + 1):g}", "model=ssd300_vgg16"],
            summary={"epoch": 2, "val_map50": value, "val_map50_95": value / 2, "name": "x"},
            objective=objective,
        )
    return tmp_path


def test_summary_lists_every_job_best_first_in_csv_and_markdown(tmp_path):
    summary = summarize_sweep(sweep_dir=_sweep(tmp_path, [0.2, 0.5, 0.1]))
    assert [row["job"] for row in summary.rows] == [1, 0, 2]
    with summary.csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["train.lr"] for row in rows] == ["0.02", "0.01", "0.03"]
    assert list(rows[0])[:5] == ["job", "model", "train.lr", "val_map50", "epoch"]
    assert "name" not in rows[0]  # scalars only
    lines = summary.markdown_path.read_text().splitlines()
    assert lines[0] == "| job | model | train.lr | val_map50 | epoch | val_map50_95 |"
    assert lines[2] == "| 1 | ssd300_vgg16 | 0.02 | 0.5 | 2 | 0.25 |"
    assert len(lines) == 5
    assert summary.best_command == "dvc exp run -S train.lr=0.02 -S model=ssd300_vgg16"


def test_minimize_sorts_the_other_way(tmp_path):
    summary = summarize_sweep(sweep_dir=_sweep(tmp_path, [0.2, 0.5, 0.1]), direction="minimize")
    assert [row["job"] for row in summary.rows] == [2, 0, 1]


def test_jobs_without_an_objective_come_last_and_give_no_command(tmp_path):
    summary = summarize_sweep(sweep_dir=_sweep(tmp_path, [0.2, 0.5], objective=None))
    assert [row["job"] for row in summary.rows] == [0, 1]
    assert summary.best_command is None
    _sweep(tmp_path / "more", [float("nan"), 0.1])
    assert [r["job"] for r in read_job_results(tmp_path / "more")] == [0, 1]
    nan_last = summarize_sweep(sweep_dir=tmp_path / "more")
    assert [row["job"] for row in nan_last.rows] == [1, 0]


def test_the_dvc_line_quotes_what_the_shell_would_split():
    overrides = ["train.unfreeze={0: 0, 3: 3}", "+data.class_map={a:b}", "train.lr=0.01"]
    command = dvc_exp_command(overrides)
    assert shlex.split(command)[3:] == [x for o in overrides for x in ("-S", o)]


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(ConfigError, match="objective 'map'"):
        write(job_dir=tmp_path, job=0, overrides=[], summary={"x": 1}, objective="map")
    assert not (tmp_path / RESULT_FILE).exists()
    with pytest.raises(DataError, match="no such sweep folder"):
        summarize_sweep(sweep_dir=tmp_path / "missing")
    with pytest.raises(DataError, match=RESULT_FILE):
        summarize_sweep(sweep_dir=tmp_path)
    with pytest.raises(ConfigError, match="direction"):
        summarize_sweep(sweep_dir=_sweep(tmp_path, [0.1]), direction="up")
