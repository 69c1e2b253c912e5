"""Shared Hydra entry point of the stage scripts (not a stage itself).

DVC runs a stage with ``--config-dir . --config-name params`` (dvc.yaml): exactly params.yaml,
writing the DVC-tracked outputs. Run by hand (``-m`` sweeps: stages/_sweep.py) it composes conf/
and writes under Hydra's run or sweep folder (detflow.pipeline.stage_root)."""

import functools
import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from detflow.core.errors import ConfigError, DetflowError
from detflow.pipeline.config_safety import check_targets
from detflow.pipeline.pythonpath import prepend_pythonpath
from detflow.pipeline.stage_root import output_root

from _sweep import sweep_result

log = logging.getLogger("detflow")


def _checked(cfg) -> dict:
    """The resolved config; ConfigError for a missing value or a disallowed ``_target_``."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        raise ConfigError(f"config key {e.full_key} is required; set {e.full_key}=VALUE") from e
    check_targets(config)
    return config


def stage(run=None, *, objective: str | None = None):
    """Make ``run(cfg: dict, root: Path) -> summary`` a Hydra app that logs its summary and
    reports a user error in one line (exit code 2), without a traceback. ``objective``: the
    summary key a sweep optimizes (higher is better), e.g. ``@stage(objective="val_map50")``."""
    if run is None:
        return functools.partial(stage, objective=objective)

    @functools.wraps(run)
    def task(cfg):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines reach DVC's log as they come
        hc = HydraConfig.get()
        root = output_root(config_name=hc.job.config_name, job_dir=hc.runtime.output_dir)
        try:
            summary = run(_checked(cfg), root)
            result = sweep_result(summary, objective, job_dir=root)
        except DetflowError as exc:
            print(f"detflow {hc.job.name}: error: {exc}", file=sys.stderr)
            sys.exit(2)
        log.info("%s done: %s", hc.job.name, json.dumps(summary, default=str))
        return result

    prepend_pythonpath(Path(__file__).resolve().parent)  # jobs in fresh interpreters import _app
    return hydra.main(config_path="../conf", config_name="config", version_base="1.3")(task)
