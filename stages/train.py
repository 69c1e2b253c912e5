"""train: fit model.* on the augmented train split with train.*; checkpoints in paths.train,
per-epoch curves (DVCLive) in paths.reports/train."""

from pathlib import Path

from dvclive import Live

from detflow.engine import train_detector

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths, options = cfg["paths"], cfg["train"]
    with Live(
        dir=str(root / paths["reports"] / "train"), dvcyaml=None, save_dvc_exp=False, report=None
    ) as live:

        def log_epoch(epoch: int, metrics: dict) -> None:
            for key, value in metrics.items():
                if key != "epoch":
                    live.log_metric(key, value)
            live.next_step()

        best = train_detector(
            model_config=cfg["model"],
            postprocess=cfg["postprocess"],
            train_json=Path(paths["augmented"]) / "train.json",
            val_json=Path(paths["split"]) / "val.json",
            out_dir=root / paths["train"],
            epochs=options["epochs"],
            batch_size=options["batch_size"],
            lr=options["lr"],
            momentum=options["momentum"],
            weight_decay=options["weight_decay"],
            warmup_steps=options["warmup_steps"],
            grad_clip_norm=options["grad_clip_norm"],
            seed=options["seed"],
            device=options["device"],
            threads=options["threads"],
            config=cfg,
            on_epoch_end=log_epoch,
        )
    return best


if __name__ == "__main__":
    main()
