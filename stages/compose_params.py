"""Compose conf/ into params.yaml exactly as `dvc exp run` does (`make params`).

Usage: python stages/compose_params.py [OVERRIDE ...] [--out FILE]
"""

import argparse
from pathlib import Path

from dvc.repo import Repo
from dvc.utils.hydra import compose_and_dump

ROOT = Path(__file__).resolve().parent.parent


def compose(overrides: list[str], out: Path) -> None:
    """The same call, with the same .dvc/config hydra settings, that DVC makes for
    `dvc exp run -S …` with Hydra composition enabled."""
    hydra = Repo(str(ROOT)).config.get("hydra", {})
    config_dir = str(ROOT / hydra.get("config_dir", "conf"))
    name = hydra.get("config_name", "config")
    compose_and_dump(out, config_dir, None, name, str(ROOT), overrides)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.epochs=1")
    parser.add_argument("--out", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()
    compose(args.overrides, args.out)
