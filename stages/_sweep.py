"""Sweeps of the stages: each job records its result (:func:`sweep_result`, called by _app),
and the Hydra callback of every stage (conf/config.yaml ``hydra.callbacks``) writes at the end
of a sweep (``-m``) the summary table of its jobs, best first, and the best job's
``dvc exp run`` line.

A single run and a DVC run (``--config-name params``, which has no callbacks) skip both.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from detflow.core.errors import DetflowError
from detflow.pipeline.sweep_summary import summarize_sweep, write_job_result

log = logging.getLogger("detflow")
STAGES_DIR = Path(__file__).resolve().parent


class SweepSummaryCallback(Callback):
    """Write ``summary.csv`` and ``summary.md`` in the sweep folder, sorted by the jobs'
    objective (``direction``: maximize | minimize), and print them with the best job as a
    ``dvc exp run -S …`` line."""

    def __init__(self, direction: str = "maximize") -> None:
        self.direction = direction

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            summary = summarize_sweep(sweep_dir=sweep_dir, direction=self.direction)
        except DetflowError as exc:
            log.warning("no sweep summary: %s", exc)
            return
        print(f"sweep summary ({summary.csv_path}, {summary.markdown_path}):", flush=True)
        print(summary.markdown_path.read_text(), flush=True)
        if summary.best_command:
            print(f"best: {summary.best_command}", flush=True)


def share_stage_helpers() -> None:
    """Put stages/ on PYTHONPATH, so that launchers starting fresh interpreters (joblib's
    workers, submitit jobs here or on SLURM nodes) can unpickle a task that uses _app and
    _sweep, as the stage script itself can (its folder is its sys.path[0])."""
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(STAGES_DIR) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STAGES_DIR), *paths]))


def sweep_result(summary: dict, objective: str | None, *, job_dir: Path):
    """In a sweep, record this job's result in ``job_dir`` (rank 0 only) and return what the
    sweeper gets: the objective's value, or the summary when the stage has none. Otherwise
    return the summary."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return summary
    if int(os.environ.get("RANK", "0")) == 0:
        record = write_job_result(
            job_dir=job_dir,
            job=hydra_cfg.job.num,
            overrides=list(hydra_cfg.overrides.task),
            summary=summary,
            objective=objective,
        )
        return summary if objective is None else record["value"]
    return summary if objective is None else float(summary[objective])
