"""Shared Hydra entry point of the stage scripts (not a stage itself).

DVC runs a stage as ``python stages/<stage>.py --config-dir . --config-name params …``
(dvc.yaml), so it uses exactly params.yaml and writes the DVC-tracked outputs. Run by hand
(``python stages/train.py train.lr=0.02``, or ``-m`` to sweep) a stage composes conf/, reads
its inputs from the workspace and writes under Hydra's run or sweep folder instead.
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

from detflow.errors import DetflowError

log = logging.getLogger("detflow")
PARAMS_CONFIG = "params"  # the --config-name DVC passes: params.yaml is the whole config


def output_root() -> Path:
    """Where this run writes: the workspace under DVC, Hydra's job folder otherwise."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.job.config_name == PARAMS_CONFIG:
        return Path(".")
    return Path(hydra_cfg.runtime.output_dir)


def stage(run):
    """Make ``run(cfg: dict, root: Path) -> summary`` a Hydra app that logs its summary and
    reports a user error in one line (exit code 2), without a traceback."""

    @functools.wraps(run)
    def task(cfg):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines reach DVC's log as they come
        name = HydraConfig.get().job.name
        try:
            config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
            summary = run(config, output_root())
        except MissingMandatoryValue as exc:
            message = f"config key {exc.full_key} is required; set {exc.full_key}=VALUE"
        except DetflowError as exc:
            message = str(exc)
        else:
            log.info("%s done: %s", name, json.dumps(summary, default=str))
            return summary
        print(f"detflow {name}: error: {message}", file=sys.stderr)
        sys.exit(2)

    return hydra.main(config_path="../conf", config_name="config", version_base="1.3")(task)
