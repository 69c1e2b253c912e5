"""A tiny, real detflow repository for the slow tests: a temporary git copy of this working
tree with tiny settings as its default config, reproduced by DVC."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, run

# Tiny settings as a config of conf/: `dvc exp run -S` re-composes from conf/, so the tiny
# defaults must live there (not only in params.yaml) for experiments to stay tiny.
TINY_CONFIG = """\
defaults:
  - config
  - override data: synthetic
  - _self_

data:
  num_images: 40
  image_size: 128
model:
  min_size: 128
  max_size: 128
train:
  epochs: 3
  warmup_steps: 5
export:
  parity_images: 4
optimize:
  calibration_images: 4
  # every variant, NNCF's openvino_int8 (the default deploy format) built for real
  variants: [ort_fp32, int8_static, int8_dynamic, fp16, openvino_fp32, openvino_bf16,
    openvino_int8, tensorrt_fp16, tensorrt_int8]
"""


def dvc(repo: Path, *args: str, check=True, timeout=900) -> subprocess.CompletedProcess:
    """Run ``dvc ARGS`` in ``repo`` with this interpreter's DVC."""
    return run([sys.executable, "-m", "dvc", *args], repo, check=check, timeout=timeout)


def restore_committed(repo: Path) -> None:
    """Put ``repo``'s workspace back as committed: tracked files, untracked ones removed (an
    earlier test's other model leaves its own curve files in git-tracked report folders), and
    DVC's outputs from its cache."""
    run(["git", "checkout", "-q", "--", "."], repo)
    run(["git", "clean", "-fdq"], repo)
    dvc(repo, "checkout", "--force")


def train_sweep(repo: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python stages/train.py --config-name tiny -m OVERRIDES`` in ``repo`` (a Hydra sweep)."""
    return run([sys.executable, "stages/train.py", "--config-name", "tiny", "-m", *overrides], repo)


def make_tiny_repo(repo: Path, *, config: str = TINY_CONFIG, repro: bool = True) -> Path:
    """Copy this working tree's files that git tracks or would track (not the bundled dataset,
    nothing git-ignored) to ``repo``, make
    ``config`` its default (conf/tiny.yaml, composed into params.yaml), commit, and unless
    ``repro`` is false run ``dvc repro`` and commit its results."""
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        if name.startswith("data/sources/") or not (REPO / name).is_file():
            continue
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, repo / name)
    (repo / "conf" / "tiny.yaml").write_text(config)
    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.name", "detflow test"], repo)
    run(["git", "config", "user.email", "test@detflow.invalid"], repo)
    dvc(repo, "config", "hydra.config_name", "tiny")
    run([sys.executable, "stages/compose_params.py"], repo)  # `make params`, config tiny
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny copy"], repo)
    if repro:  # committed, so that HEAD names outputs the cache holds
        dvc(repo, "repro")
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-qm", "tiny result"], repo)
    return repo
