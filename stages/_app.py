"""Shared Hydra entry point of the stage scripts (not a stage itself).

DVC runs a stage as ``python stages/<stage>.py --config-dir . --config-name params …``
(dvc.yaml), so it uses exactly params.yaml and writes the DVC-tracked outputs. Run by hand
(``python stages/train.py train.lr=0.02``, or ``-m`` to sweep) a stage composes conf/, reads
its inputs from the workspace and writes under Hydra's run or sweep folder instead. In a
sweep each job also writes its overrides and summary (detflow.pipeline.sweep_summary) for
the summary table that stages/_sweep.py writes at the end, and returns the stage's
objective (if it has one) to the sweeper (Optuna maximizes it).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from detflow.core.errors import DetflowError
from detflow.pipeline.config_safety import check_targets
from detflow.pipeline.pythonpath import prepend_pythonpath

from _sweep import sweep_result

log = logging.getLogger("detflow")
PARAMS_CONFIG = "params"  # the --config-name DVC passes: params.yaml is the whole config


def output_root() -> Path:
    """Where this run writes: the workspace under DVC, Hydra's job folder otherwise."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.job.config_name == PARAMS_CONFIG:
        return Path(".")
    return Path(hydra_cfg.runtime.output_dir)


def stage(run=None, *, objective: str | None = None):
    """Make ``run(cfg: dict, root: Path) -> summary`` a Hydra app that logs its summary and
    reports a user error in one line (exit code 2), without a traceback. ``objective``: the
    summary key a sweep optimizes (higher is better), e.g. ``@stage(objective="val_map50")``."""
    if run is None:
        return functools.partial(stage, objective=objective)

    @functools.wraps(run)
    def task(cfg):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines reach DVC's log as they come
        name = HydraConfig.get().job.name
        try:
            config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
            check_targets(config)  # no _target_ outside detflow, torchvision, albumentations
            summary = run(config, output_root())
            result = sweep_result(summary, objective, job_dir=output_root())
        except MissingMandatoryValue as exc:
            message = f"config key {exc.full_key} is required; set {exc.full_key}=VALUE"
        except DetflowError as exc:
            message = str(exc)
        else:
            log.info("%s done: %s", name, json.dumps(summary, default=str))
            return result
        print(f"detflow {name}: error: {message}", file=sys.stderr)
        sys.exit(2)

    prepend_pythonpath(Path(__file__).resolve().parent)  # jobs in fresh interpreters import _app
    return hydra.main(config_path="../conf", config_name="config", version_base="1.3")(task)
