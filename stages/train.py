"""train: fit model.* on the augmented train split with train.*: checkpoints in paths.train;
curves (DVCLive), data check, auto choices in paths.reports/train (torchrun: rank 0 writes)."""

import contextlib
from pathlib import Path

from dvclive import Live

from detflow.core.files import write_json
from detflow.model.postprocess_config import PostprocessOptions
from detflow.train.auto_model import summary_metrics
from detflow.train.distributed import is_main_process
from detflow.train.loop import train_detector
from detflow.train.options import TrainOptions

from _app import stage


@stage(objective="val_map50")  # a sweep (Optuna) maximizes the best val mAP50
def main(cfg: dict, root: Path) -> dict:
    paths = cfg["paths"]
    options = TrainOptions.from_config(cfg["train"])
    postprocess = PostprocessOptions.from_config(cfg["postprocess"])
    live = None
    if is_main_process():
        live = Live(
            dir=str(root / paths["reports"] / "train"),
            dvcyaml=None,
            save_dvc_exp=False,
            report=None,
        )

    def log_data_check(check: dict) -> None:
        write_json(root / paths["reports"] / "train" / "data_check.json", check)
        live.summary.update(summary_metrics(check))  # every auto choice, in dvc exp show

    def log_epoch(epoch: int, metrics: dict) -> None:
        for key, value in metrics.items():
            if key != "epoch":
                live.log_metric(key, value)
        live.next_step()

    with live or contextlib.nullcontext():
        best = train_detector(
            model_config=cfg["model"],
            postprocess=postprocess,
            train_json=Path(paths["augmented"]) / "train.json",
            val_json=Path(paths["split"]) / "val.json",
            out_dir=root / paths["train"],
            options=options,
            config=cfg,
            on_epoch_end=log_epoch if live else None,
            test_json=Path(paths["split"]) / "test.json",
            on_data_check=log_data_check if live else None,
        )
    return best


if __name__ == "__main__":
    main()
