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
from detflow.pipeline.sweep_summary import job_result, summarize_sweep

log = logging.getLogger("detflow")


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


def sweep_result(summary: dict, objective: str | None, *, job_dir: Path):
    """In a sweep, this job's result as :func:`detflow.pipeline.sweep_summary.job_result`
    records and returns it; otherwise the summary."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return summary
    return job_result(
        job_dir=job_dir,
        job=hydra_cfg.job.num,
        overrides=list(hydra_cfg.overrides.task),
        summary=summary,
        objective=objective,
        rank=int(os.environ.get("RANK", "0")),
    )
