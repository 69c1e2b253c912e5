"""Make a folder importable by the fresh interpreters a launcher starts."""

from __future__ import annotations

import os
from pathlib import Path


def prepend_pythonpath(folder: str | Path) -> None:
    """Put ``folder`` first on ``PYTHONPATH`` (once), so that launchers starting fresh
    interpreters (joblib's workers, submitit jobs here or on SLURM nodes) can import what a
    script in that folder imports from it (its folder is only the script's own sys.path[0])."""
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(folder) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), *paths]))
