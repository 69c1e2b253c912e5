"""Hydra callback of every stage (conf/config.yaml ``hydra.callbacks``): at the end of a sweep
(``-m``), the summary table of its jobs, best first, and the best job's ``dvc exp run`` line.

A single run and a DVC run (``--config-name params``, which has no callbacks) do nothing here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from detflow.errors import DetflowError
from detflow.sweep import summarize_sweep

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
