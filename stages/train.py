"""train: plan every auto from the train split (reports/train/plan.json), cut its tiles
(paths.tiles), fit model.* with train.* into paths.train; curves (DVCLive) and machine.json in
paths.reports/train (torchrun: rank 0 writes). The test split is not read."""

import contextlib
from pathlib import Path

from dvclive import Live

from detflow.data.manifest import load_dataset
from detflow.model.postprocess_config import PostprocessOptions
from detflow.train.distributed import is_main_process, world_size
from detflow.train.loop import train_detector
from detflow.train.options import TrainOptions
from detflow.train.plan import cut_training_tiles, plan_training, record_plan

from _app import stage


@stage(objective="val_map50")  # a sweep (Optuna) maximizes the best val mAP50
def main(cfg: dict, root: Path) -> dict:
    paths = cfg["paths"]
    train_json = Path(paths["augmented"]) / "train.json"
    val_json = Path(paths["split"]) / "val.json"
    plan = plan_training(
        model_config=cfg["model"],
        postprocess=PostprocessOptions.from_config(cfg["postprocess"]),
        options=TrainOptions.from_config(cfg["train"]),
        train_dataset=load_dataset(train_json),
        val_dataset=load_dataset(val_json),
        world_size=world_size(),
    )
    train_json = cut_training_tiles(plan, train_json=train_json, out_dir=root / paths["tiles"],
                                    max_pixels=cfg["limits"]["max_pixels"])  # fmt: skip
    live, reports = None, root / paths["reports"] / "train"
    if is_main_process():
        live = Live(dir=str(reports), dvcyaml=None, save_dvc_exp=False, report=None)
        record_plan(plan, reports)  # plan.json (each choice, its reason), machine.json; logged
        live.summary.update(plan.metrics())  # the choices, flattened, in dvc exp show

    def log_epoch(epoch: int, metrics: dict) -> None:
        for key, value in metrics.items():
            if key != "epoch":
                live.log_metric(key, value)
        live.next_step()

    with live or contextlib.nullcontext():
        return train_detector(
            plan=plan,
            train_json=train_json,
            val_json=val_json,
            out_dir=root / paths["train"],
            config=cfg,
            on_epoch_end=log_epoch if live else None,
        )


if __name__ == "__main__":
    main()
