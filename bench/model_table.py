"""The model table: each model config trained the same way on the bundled dataset's split.

For every option of conf/model/ (or those named), trains with the composed config
(``train.*`` defaults, ``train.epochs`` set here, on CPU) on the augmented train split,
validating on the val split, then scores ``best.pt`` on the test split. Prints a markdown
table: model, initial weights, CPU train img/s (median over epochs after the first), test
mAP50 and mAP50-95, best epoch. Needs ``data/augmented`` and ``data/split`` (``dvc repro``).
Checkpoints go to a temporary folder (``--out`` keeps them).

Usage: python bench/model_table.py [--epochs 8] [--models NAME ...] [--max-images N]
       [--threads 0] [--out DIR] [OVERRIDE ...]
``--max-images`` takes the first N images of each split (for a quick check, not the table).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from detflow.core.errors import DetflowError
from detflow.data import manifest
from detflow.data.torch_dataset import DetectionDataset
from detflow.evaluate.inference import evaluate_model
from detflow.model.checkpoint_file import resolve_postprocess
from detflow.model.postprocess_config import PostprocessOptions
from detflow.model.restore import load_checkpoint
from detflow.train.loop import train_detector
from detflow.train.options import TrainOptions
from detflow.train.plan import plan_training

REPO = Path(__file__).resolve().parents[1]


def config(overrides: list[str]) -> dict:
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def split_files(paths: dict, max_images: int | None, work: Path) -> dict[str, Path]:
    """train (augmented), val and test JSONs; the first ``max_images`` of each if given."""
    files = {
        "train": REPO / paths["augmented"] / "train.json",
        "val": REPO / paths["split"] / "val.json",
        "test": REPO / paths["split"] / "test.json",
    }
    for name, path in files.items():
        if not path.exists():
            raise SystemExit(f"{path} missing: run `dvc repro augment` first")
        if max_images:
            dataset = manifest.load_dataset(path)
            ids = [image["id"] for image in dataset["images"][:max_images]]
            files[name] = work / f"{name}.json"
            manifest.save_dataset(
                manifest.subset(dataset, ids),
                files[name],
                image_dir=manifest.image_dir(path, dataset),
            )
    return files


def weights_label(model: dict) -> str:
    for key in ("weights", "backbone_weights"):
        if model.get(key) not in (None, "none"):
            return f"{key}={model[key]}"
    return "from scratch"


def row(name: str, args, files: dict[str, Path], work: Path) -> str:
    cfg = config([f"model={name}", f"train.epochs={args.epochs}", *args.overrides])
    train = {**cfg["train"], "device": "cpu", "threads": args.threads, "resume": False}
    postprocess = PostprocessOptions.from_config(cfg["postprocess"])
    rates: list[float] = []
    plan = plan_training(
        model_config=cfg["model"],
        postprocess=postprocess,
        options=TrainOptions.from_config(train),
        train_dataset=manifest.load_dataset(files["train"]),
        val_dataset=manifest.load_dataset(files["val"]),
    )
    best = train_detector(
        plan=plan,
        train_json=files["train"],
        val_json=files["val"],
        out_dir=work / name,
        config=cfg,
        on_epoch_end=lambda epoch, metrics: rates.append(metrics["train_images_per_s"]),
    )
    model, state = load_checkpoint(work / name / "best.pt", postprocess=postprocess)
    postprocess = resolve_postprocess(postprocess, state)  # auto: as trained
    test = evaluate_model(
        model, DetectionDataset(files["test"]), postprocess=postprocess, device="cpu"
    )
    rate = statistics.median(rates[1:] or rates)
    return (
        f"| {name} | {weights_label(cfg['model'])} | {cfg['model']['min_size']} | {rate:.2f} | "
        f"{test['map50']:.3f} | {test['map50_95']:.3f} | {best['epoch']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--models", nargs="+", help="default: every conf/model/ option")
    parser.add_argument("--max-images", type=int, help="first N images per split (smoke test)")
    parser.add_argument("--threads", type=int, default=0, help="0: all cores")
    parser.add_argument("--out", type=Path, help="keep the checkpoints here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every model")
    args = parser.parse_args()
    names = args.models or sorted(p.stem for p in (REPO / "conf/model").glob("*.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        files = split_files(config([])["paths"], args.max_images, work)
        counts = {k: len(manifest.load_dataset(v)["images"]) for k, v in files.items()}
        print(
            f"machine: {os.cpu_count()} cores, threads {args.threads or 'all'}; {args.epochs} "
            f"epochs; images train {counts['train']} / val {counts['val']} / test {counts['test']}"
        )
        columns = ["model", "weights", "size px", "CPU train img/s", "test mAP50"]
        columns += ["test mAP50-95", "best epoch"]
        print("| " + " | ".join(columns) + " |")
        print("|---" * len(columns) + "|")
        for name in names:
            try:
                line = row(name, args, files, work)
            except DetflowError as exc:  # e.g. a diverging model: report it, go on
                line = f"| {name} | failed: {str(exc).splitlines()[0]} |"
            print(line, flush=True)


if __name__ == "__main__":
    main()
