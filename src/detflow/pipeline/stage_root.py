"""Where a stage writes: the workspace when DVC runs it, Hydra's job folder otherwise."""

from __future__ import annotations

from pathlib import Path

PARAMS_CONFIG = "params"  # the --config-name DVC passes: params.yaml is the whole config


def output_root(*, config_name: str, job_dir: str | Path) -> Path:
    """The workspace (``.``) for a run of ``params`` (dvc.yaml's command), else ``job_dir``."""
    return Path(".") if config_name == PARAMS_CONFIG else Path(job_dir)
