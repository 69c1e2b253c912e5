"""Benchmark: detflow's training throughput against the torchvision tutorial's training loop.

The reference is the loop of torchvision's "TorchVision Object Detection Finetuning Tutorial":
SGD over the trainable parameters, then per batch ``loss_dict = model(images, targets)``,
``losses = sum(loss_dict.values())``, ``zero_grad``, ``backward``, ``step`` (and the loss's
``.item()``, which the tutorial logs). Both train the same model (``build_model`` of the
composed config's ``model.*``, same seed) on the same batches in the same order (their
loaders' generators are seeded alike), with the same number of threads, in this one process.
Both use the tutorial's optimizer settings (SGD, lr 0.005, momentum 0.9, weight decay 0.0005)
at a constant learning rate: the lr path changes the model's state and with it the cost of a
step (how many proposals survive NMS), which is not what is compared here. detflow keeps its
other defaults (gradient clipping, channels-last weights); with
``train.grad_clip_norm=null train.channels_last=false`` it does exactly the tutorial's
arithmetic, and the last column (each loop's mean loss in its last epoch) shows it.

detflow's figure is the ``train_images_per_s`` it reports for an epoch (its validation is not
counted); the first epoch of each run is a warm-up and is not counted either. One untimed
tutorial epoch first warms the process up (the first run in a process is slower), then rounds
alternate which loop goes first. Prints one row per round and the median ratio
detflow/tutorial (goal ≥ 1.0).

Usage: python bench/train_throughput.py [--train data/augmented/train.json] [--images 64]
       [--epochs 3] [--rounds 4] [--threads 0] [--device cpu] [OVERRIDE ...]
OVERRIDEs are Hydra overrides of conf/ (e.g. model=fcos_mobilenet_v2 train.batch_size=2).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from detflow.core import seeding as rng
from detflow.data import manifest
from detflow.data.torch_dataset import DetectionDataset, collate
from detflow.model.build import build_model
from detflow.model.postprocess import model_kwargs
from detflow.model.postprocess_config import PostprocessOptions
from detflow.train.loop import train_detector
from detflow.train.options import TrainOptions
from detflow.train.plan import plan_training

REPO = Path(__file__).resolve().parents[1]
# The tutorial's optimizer settings, at a constant learning rate (overridable).
TUTORIAL = {
    "train.lr": "0.005",
    "train.momentum": "0.9",
    "train.weight_decay": "0.0005",
    "train.warmup_steps": "0",
    "train.schedule": "step",
    "train.milestones": "[]",
}


def config(overrides: list[str]) -> dict:
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def subset(json_path: Path, count: int, out: Path) -> Path:
    """The first ``count`` images of a canonical dataset, as a new JSON over the same images."""
    dataset = manifest.load_dataset(json_path)
    ids = [image["id"] for image in dataset["images"][:count]]
    image_dir = manifest.image_dir(json_path, dataset)
    manifest.save_dataset(manifest.subset(dataset, ids), out, image_dir=image_dir)
    return out


def detflow_rate(
    cfg: dict, train_json: Path, val_json: Path, work: Path, options
) -> tuple[float, float]:
    """Median images/s over the timed epochs, and the last epoch's mean loss."""
    epochs: list[dict] = []
    plan = plan_training(
        model_config=cfg["model"],
        postprocess=PostprocessOptions.from_config(cfg["postprocess"]),
        options=options,
        train_dataset=manifest.load_dataset(train_json),
        val_dataset=manifest.load_dataset(val_json),
    )
    train_detector(
        plan=plan,
        train_json=train_json,
        val_json=val_json,
        out_dir=work / "detflow",
        on_epoch_end=lambda epoch, metrics: epochs.append(metrics),
    )
    rates = [metrics["train_images_per_s"] for metrics in epochs]
    return statistics.median(rates[1:] or rates), epochs[-1]["train_loss"]


def tutorial_rate(
    cfg: dict, train_json: Path, options, device: torch.device
) -> tuple[float, float]:
    """The tutorial's loop, as written there (no clipping, warmup or AMP): median images/s
    over the timed epochs, and the last epoch's mean loss."""
    rng.seed_everything(options.seed)
    dataset = DetectionDataset(train_json)
    model = build_model(
        **cfg["model"],
        num_classes=len(dataset.class_names),
        **model_kwargs(PostprocessOptions.from_config(cfg["postprocess"])),
    ).to(device)
    # Shuffled by a generator seeded as detflow's loader is, so both see the same batches in
    # the same order: the only difference left is the loop.
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=options.batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(options.seed),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay
    )
    rates = []
    for _ in range(options.epochs):
        model.train()
        loss_sum = 0.0
        start = time.perf_counter()
        for images, targets in loader:
            images = [image.to(device) for image in images]
            targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()}
                       for t in targets]  # fmt: skip
            loss_dict = model(images, targets)
            losses = sum(loss for loss in loss_dict.values())
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
            loss_sum += losses.item()  # the tutorial logs it each step
        rates.append(len(dataset) / (time.perf_counter() - start))
    return statistics.median(rates[1:] or rates), loss_sum / len(loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=REPO / "data/augmented/train.json")
    parser.add_argument("--images", type=int, default=64, help="training images used")
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=4, help="even: each loop first as often")
    parser.add_argument("--threads", type=int, default=0, help="0: all cores")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    given = {override.split("=")[0] for override in args.overrides}
    defaults = [f"{key}={value}" for key, value in TUTORIAL.items() if key not in given]
    cfg = config(defaults + args.overrides)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    train = {**cfg["train"], "epochs": args.epochs, "threads": threads, "device": args.device}
    options = TrainOptions.from_config(train)
    print(
        f"machine: {os.cpu_count()} cores, {threads} threads, device {args.device}; "
        f"model {cfg['model']['name']} at {cfg['model']['min_size']} px; batch "
        f"{options.batch_size}; {args.images} images of {args.train}; {args.epochs} epochs/run; "
        f"lr {options.lr} ({options.schedule}, warmup {options.warmup_steps})"
    )
    print("| round | tutorial img/s | detflow img/s | detflow/tutorial | last-epoch loss t / d |")
    print("|---|---|---|---|---|")
    ratios = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        train_json = subset(args.train, args.images, work / "train.json")
        val_json = subset(args.train, 2, work / "val.json")  # validation is not timed
        warm_up = dataclasses.replace(options, epochs=1)
        tutorial_rate(cfg, train_json, warm_up, torch.device(args.device))
        for index in range(args.rounds):
            order = ["detflow", "tutorial"] if index % 2 == 0 else ["tutorial", "detflow"]
            runs = {}
            for name in order:
                if name == "detflow":
                    runs[name] = detflow_rate(cfg, train_json, val_json, work, options)
                else:
                    runs[name] = tutorial_rate(cfg, train_json, options, torch.device(args.device))
            (tutorial, tutorial_loss), (detflow, detflow_loss) = runs["tutorial"], runs["detflow"]
            ratios.append(detflow / tutorial)
            print(
                f"| {index + 1} | {tutorial:.2f} | {detflow:.2f} | {ratios[-1]:.3f}× | "
                f"{tutorial_loss:.4f} / {detflow_loss:.4f} |"
            )
            sys.stdout.flush()
    print(f"\nmedian detflow/tutorial: {statistics.median(ratios):.3f}× (goal >= 1.0×)")


if __name__ == "__main__":
    main()
