"""What each model costs: parameters and FLOPs per image at its configured input size.

For every option of conf/model/ (or those named): builds the model with its composed config
(``auto`` keys left at the builder's defaults, 2 classes, untrained: the count of parameters
and FLOPs does not depend on the weights, except a two-stage detector's second stage, which
runs on the proposals kept) and counts one eval-mode forward pass of the first test image
with ``torch.utils.flop_counter`` (:mod:`detflow.evaluate.cost`). Prints a markdown table.
Needs ``data/split/test.json`` (``dvc repro split``).

With ``--parts``: also where the compute goes, per part (trunk, FPN, head, and the head per
pyramid level: :func:`detflow.evaluate.cost.flops_by_part`), one line per model.

With ``--candidates``: issue 38's lighter FCOS candidates (``bench/fcos_candidates.py``) side
by side, every figure measured in this one run, with the ratio of each to the default's.
Needs no data (generated images).

Usage: python bench/model_cost.py [--models NAME ...] [--parts]
       python bench/model_cost.py --candidates [--runs 10] [--rounds 3] [--train-steps 3]
       [--train-threads 0] [--score-threshold 0.5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from detflow.data.torch_dataset import DetectionDataset
from detflow.evaluate.cost import flops_by_part, model_cost
from detflow.model.build import build_model

REPO = Path(__file__).resolve().parents[1]


def model_config(name: str) -> dict:
    return compose_config([f"model={name}"])


def compose_config(overrides: list[str]) -> dict:
    """conf/config.yaml composed with Hydra ``overrides``, as a plain dict."""
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--parts", action="store_true", help="GFLOPs per part and level")
    parser.add_argument("--candidates", action="store_true", help="issue 38's FCOS candidates")
    parser.add_argument("--runs", type=int, default=10, help="images timed per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    parser.add_argument("--train-steps", type=int, default=3, help="timed, per round")
    parser.add_argument("--train-threads", type=int, default=0, help="0: all cores")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="candidates' NMS input")
    args = parser.parse_args()
    if args.candidates:
        from fcos_candidates import compare_candidates  # bench/, beside this script

        compare_candidates(args, compose=compose_config)
        return
    names = args.models or sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
    cfg = model_config(names[0])
    image = DetectionDataset(REPO / cfg["paths"]["split"] / "test.json")[0][0]
    torch.manual_seed(0)
    print("| model | input px | params (M) | GFLOPs / image | count s |")
    print("|---|---|---|---|---|")
    for name in names:
        config = {k: v for k, v in model_config(name)["model"].items() if v != "auto"}
        config.pop("tiles", None)  # the training plan's, not the builder's
        model = build_model(**config, num_classes=2)
        start = time.perf_counter()
        cost = model_cost(model, image)
        seconds = time.perf_counter() - start
        size = "×".join(str(v) for v in cost["input_size"])
        print(
            f"| {name} | {size} | {cost['params'] / 1e6:.2f} | "
            f"{cost['gflops_per_image']:.2f} | {seconds:.1f} |",
            flush=True,
        )
        if args.parts:
            split = flops_by_part(model, image)
            levels = split.get("head_by_level", {})
            print(f"|   {name} by part | " + ", ".join(
                f"{part} {value:.2f}" for part, value in {**split["parts"], **levels}.items()
            ) + " | | | |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
