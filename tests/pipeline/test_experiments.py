"""Experiments for real, on one tiny temporary git copy of this repository: a queued DVC grid
compared with `dvc exp show`/`diff`/`plots diff` and kept with `dvc exp branch`/`apply`, and an
Optuna search on `train` whose best trial comes back as a ready `dvc exp run -S …` line."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run
from repo_helpers import dvc, restore_committed, train_sweep

pytestmark = pytest.mark.slow

# Tiny experiments: one epoch, no augmentation (a config-group swap), one optimize variant.
GRID = ["-S", "train.lr=0.01,0.02", "-S", "augment=none", "-S", "train.epochs=1"]
GRID += ["-S", "optimize.variants=[ort_fp32]"]
GRID_LRS = {0.01, 0.02}


@pytest.fixture(scope="module")
def exp_repo(tiny_repo) -> Path:
    """The shared tiny repo; its workspace is put back as committed afterwards."""
    yield tiny_repo
    restore_committed(tiny_repo)
    assert "up to date" in dvc(tiny_repo, "status").stdout


def wait_for_queue(repo: Path, *, timeout: float = 1200) -> str:
    """Poll `dvc queue status` until no task is queued or running; return the last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = dvc(repo, "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")
        time.sleep(5)


def experiments(shown: list) -> dict[str, dict]:
    """``dvc exp show --json`` → {experiment name: its data plus its executor's ``state``}."""
    found = {}
    for baseline in shown:
        for group in baseline.get("experiments") or []:
            state = (group.get("executor") or {}).get("state")
            for rev in group["revs"]:
                found[rev["name"]] = {**rev["data"], "state": state}
    return found


def _params(data: dict) -> dict:
    return data["params"]["params.yaml"]["data"]


@pytest.fixture(scope="module")
def queued_grid(exp_repo) -> dict[str, dict]:
    """`dvc exp run --queue` of a 2-point grid (train.lr), then `dvc queue start`; the
    finished experiments by name."""

    def shown() -> dict[str, dict]:
        return experiments(json.loads(dvc(exp_repo, "exp", "show", "--json").stdout))

    earlier = set(shown())  # another module's experiments in the shared repo
    dvc(exp_repo, "exp", "run", "--queue", *GRID)
    dvc(exp_repo, "queue", "start", "-j", "2")
    status = wait_for_queue(exp_repo)
    found = {name: data for name, data in shown().items() if name not in earlier}
    assert len(found) == 2, status
    return found


def test_exp_show_lists_both_queued_experiments_with_their_params_and_metrics(queued_grid):
    lrs, losses = set(), set()
    for name, data in queued_grid.items():
        assert data["state"] == "success", (name, data["state"])
        params = _params(data)
        assert params["train"]["epochs"] == 1 and params["augment"]["copies"] == 0, name
        lrs.add(params["train"]["lr"])
        metrics = data["metrics"]
        assert "map50" in metrics["reports/evaluate/metrics.json"]["data"], name
        train = metrics["reports/train/metrics.json"]["data"]
        assert train["step"] == 0, name  # one epoch
        losses.add(train["train_loss"])
    assert lrs == GRID_LRS
    assert len(losses) == 2  # each experiment's own result, not a copy of the other's


def test_the_readme_exp_show_lines_keep_the_key_columns(exp_repo, queued_grid):
    """The README's `--drop/--keep` and `--sort-by` lines, as written there."""
    readme = (REPO / "README.md").read_text().splitlines()
    keep = next(line for line in readme if line.startswith("dvc exp show --drop"))
    args = shlex.split(keep.split("#")[0])[1:]
    header = dvc(exp_repo, *args, "--csv").stdout.splitlines()[0].split(",")
    assert {"model.name", "train.lr", "train.epochs", "map50", "map50_95", "f1"} <= set(header)
    assert len(header) < 15, header  # not the ~300 default columns
    sort = next(line for line in readme if line.startswith("dvc exp show --sort-by"))
    table = dvc(exp_repo, *shlex.split(sort.split("#")[0])[1:]).stdout
    assert all(name in table for name in queued_grid)


def test_exp_diff_plots_diff_and_branch_compare_and_keep_a_winner(exp_repo, queued_grid, tmp_path):
    first, second = sorted(queued_grid)
    diff = json.loads(dvc(exp_repo, "exp", "diff", first, second, "--json").stdout)
    lr = diff["params"]["params.yaml"]["train.lr"]
    assert {lr["old"], lr["new"]} == GRID_LRS
    assert "train_loss" in diff["metrics"]["reports/train/metrics.json"]
    out = tmp_path / "plots"
    dvc(exp_repo, "plots", "diff", first, second, "-o", str(out))
    html = (out / "index.html").read_text()
    assert first in html and second in html
    dvc(exp_repo, "exp", "branch", first, "winner")
    branches = run(["git", "branch", "--list", "winner"], exp_repo).stdout
    assert "winner" in branches


def test_optuna_search_prints_the_best_trial_as_a_dvc_exp_run_line(exp_repo, tmp_path):
    sweep = exp_repo / "multirun/optuna"
    result = train_sweep(
        exp_repo,
        "hydra/sweeper=train_optuna",
        "hydra.sweeper.n_trials=2",
        "train.epochs=1",
        f"hydra.sweep.dir={sweep}",
    )
    assert (sweep / "optimization_results.yaml").is_file(), result.stderr
    best_value = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"]
    trials = sorted(sweep.glob("*/sweep_result.json"))
    assert len(trials) == 2
    records = [json.loads(p.read_text()) for p in trials]
    assert max(r["value"] for r in records) == pytest.approx(best_value)
    assert all(r["objective"] == "val_map50" for r in records)
    lines = [line for line in result.stdout.splitlines() if line.startswith("best: dvc exp run")]
    assert len(lines) == 1, result.stdout
    overrides = [a for a in shlex.split(lines[0].removeprefix("best: "))[3:] if a != "-S"]
    assert "train.epochs=1" in overrides and any(o.startswith("train.lr=") for o in overrides)
    # the line is ready: DVC composes exactly these overrides into params.yaml
    composed = tmp_path / "params.yaml"
    run([sys.executable, "stages/compose_params.py", *overrides, "--out", str(composed)], exp_repo)
    train = yaml.safe_load(composed.read_text())["train"]
    best = max(records, key=lambda r: r["value"])
    for override in best["overrides"]:
        key, _, value = override.partition("=")
        assert train[key.removeprefix("train.")] == pytest.approx(float(value)), override
    assert len((sweep / "summary.md").read_text().splitlines()) == 2 + 2


def test_exp_apply_brings_an_experiment_into_the_workspace(exp_repo, queued_grid):
    name = next(n for n, d in queued_grid.items() if _params(d)["train"]["lr"] == 0.02)
    dvc(exp_repo, "exp", "apply", name)
    assert yaml.safe_load((exp_repo / "params.yaml").read_text())["train"]["lr"] == 0.02
    params = json.loads(dvc(exp_repo, "params", "diff", "--json").stdout)["params.yaml"]
    assert (params["train.lr"]["old"], params["train.lr"]["new"]) == (0.005, 0.02)
    metrics = json.loads(dvc(exp_repo, "metrics", "diff", "--json").stdout)
    assert "reports/train/metrics.json" in metrics
    assert "up to date" in dvc(exp_repo, "status").stdout


def test_seeds_summary_reads_the_queued_runs_from_dvc_exp_show(exp_repo, queued_grid, capsys):
    """`detflow seeds-summary` over the real queued runs (here they differ in train.lr, not
    seed): mean ± sd per metric equal those of the values `dvc exp show` lists."""
    from detflow.cli import main as cli
    from detflow.evaluate.seeds import exp_show, seeds_summary

    names = sorted(queued_grid)
    summary = seeds_summary(exp_show(exp_repo), param="train.lr", names=names)
    values = [
        queued_grid[n]["metrics"]["reports/evaluate/metrics.json"]["data"]["map50"] for n in names
    ]
    stats = summary["metrics"]["map50"]
    assert stats["n"] == 2 and sorted(stats["values"]) == sorted(values)
    assert stats["mean"] == pytest.approx(sum(values) / 2)
    assert stats["sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert {run["train.lr"] for run in summary["runs"]} == GRID_LRS
    args = ["seeds-summary", "--repo", str(exp_repo), "--param", "train.lr", "--exp", *names]
    assert cli(args) == 0
    assert f"| map50 | 2 | {stats['mean']:.4f} ± {stats['sd']:.4f} |" in capsys.readouterr().out
