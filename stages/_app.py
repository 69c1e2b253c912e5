"""Shared Hydra entry point of the stage scripts (not a stage itself).

DVC runs every stage as ``python stages/<stage>.py --config-dir . --config-name params …``
(see dvc.yaml), so a DVC-run stage uses exactly the values in params.yaml and writes the
DVC-tracked outputs. Run by hand (``python stages/train.py train.lr=0.02``, or ``-m`` for a
sweep) a stage composes conf/ and writes its outputs under Hydra's run or sweep folder,
reading its inputs from the workspace: DVC-tracked outputs are never overwritten.
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
from detflow.files import write_json

log = logging.getLogger("detflow")
PARAMS_CONFIG = "params"  # --config-name that DVC passes: params.yaml is the config


def output_root() -> Path:
    """Where this run writes: the workspace under DVC, Hydra's job folder otherwise."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.job.config_name == PARAMS_CONFIG:
        return Path(".")
    return Path(hydra_cfg.runtime.output_dir)


def write_report(path: Path, report: dict) -> None:
    """Write a stage report atomically (JSON, no NaN)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)


def stage(run):
    """Make ``run(cfg: dict, root: Path) -> summary`` a Hydra app that reports errors in one
    line (exit code 2) and logs its summary."""

    @functools.wraps(run)
    def task(cfg):
        name = HydraConfig.get().job.name
        try:
            config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
            summary = run(config, output_root())
        except MissingMandatoryValue as exc:
            print(f"detflow {name}: error: config key {exc.full_key} is required (set it, "
                  f"e.g. {exc.full_key}=VALUE)", file=sys.stderr)
            sys.exit(2)
        except DetflowError as exc:
            print(f"detflow {name}: error: {exc}", file=sys.stderr)
            sys.exit(2)
        log.info("%s done: %s", name, json.dumps(summary, default=str))
        return summary

    return hydra.main(config_path="../conf", config_name="config", version_base="1.3")(task)
