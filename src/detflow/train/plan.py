"""The training plan: every ``auto`` of the train stage decided from the data in one step,
before any model, loader or optimizer is built.

:func:`plan_training` reads the train split (and the val split's densest image, for the
detection budget; the test split is never read) and the config, and returns a frozen
:class:`TrainingPlan`: the model config, post-processing and training options with every
``auto`` resolved, each choice with its value and reason, and the data check they rest on.
In order (each step sees the previous one's result):

1. ``model.name`` (:mod:`detflow.train.model_choice`) and, per candidate, ``model.min_size``,
   anchors, RoIs and ``postprocess.max_detections`` (:mod:`detflow.train.auto_model`).
   Candidates are measured on their skeletons (:func:`~detflow.model.build.build_skeleton`:
   the input resize, feature strides and anchor generator, no weights): the best possible
   recall and budgets of :mod:`detflow.train.data_check`.
2. ``train.epochs`` and ``train.warmup_steps`` (:mod:`detflow.train.auto_schedule`) from the
   optimizer steps per epoch, counted from the split's image records
   (:func:`~detflow.data.torch_dataset.batches_per_epoch`).

The same plan is written to ``reports/train/plan.json``, stored in the checkpoints
(``plan``) and flattened by :meth:`TrainingPlan.metrics` into the train metrics that
``dvc exp show`` lists. Training then builds once and fits (:mod:`detflow.train.loop`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from types import MappingProxyType

from detflow.core.errors import DetflowError
from detflow.core.options import read_params
from detflow.data import manifest
from detflow.data.torch_dataset import batches_per_epoch
from detflow.model.build import AUTO, build_skeleton
from detflow.model.postprocess import model_kwargs
from detflow.model.postprocess_config import DEFAULT_MAX_DETECTIONS, PostprocessOptions
from detflow.train import auto_model, data_check, model_choice
from detflow.train.auto_schedule import resolve_schedule
from detflow.train.options import TrainOptions

PLAN_SCHEMA = 1
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingPlan:
    """What training will do, decided before it starts (see the module doc).

    ``model``: the model config for :func:`~detflow.model.build.build_model` (no ``auto``
    left); ``postprocess`` and ``options``: resolved likewise; ``choices``: ``{"model.name":
    {"value", "reason"}, …}`` for every key that was ``auto``, in the order decided;
    ``check``: the data check of the chosen model (data report at its input size, best
    possible recall, budgets, every candidate's recall); ``class_names``: the train split's.
    """

    model: MappingProxyType
    postprocess: PostprocessOptions
    options: TrainOptions
    choices: MappingProxyType
    check: MappingProxyType
    class_names: tuple[str, ...]

    def to_dict(self) -> dict:
        """The JSON-ready record (``plan.json``, the checkpoints' ``plan``)."""
        return {
            "schema": PLAN_SCHEMA,
            "choices": {k: dict(v) for k, v in self.choices.items()},
            "model": dict(self.model),
            "postprocess": self.postprocess.to_dict(),
            "train": dataclasses.asdict(self.options),
            "class_names": list(self.class_names),
            "data_check": dict(self.check),
        }

    def metrics(self) -> dict:
        """What ``dvc exp show`` lists of the plan: the best possible recall and every
        ``auto`` choice by its key's last part (a list as one string, ``32 64``)."""
        return {
            "best_possible_recall": self.check["best_possible_recall"],
            "auto": {
                key.rpartition(".")[2]: _shown(choice["value"])
                for key, choice in self.choices.items()
            },
        }

    def warnings(self) -> list[str]:
        """Budgets the data exceeds (the data check's), each with what to set."""
        return list(self.check["budgets"]["warnings"])

    def log(self) -> None:
        """Log :meth:`lines` (info) and :meth:`warnings` (warning)."""
        for line in self.lines():
            log.info(line)
        for warning in self.warnings():
            log.warning("data check: %s", warning)

    def lines(self) -> list[str]:
        """One line per choice, ``key=value (reason)``, after the data check's summary."""
        return [data_check.summary_line(self.check)] + [
            f"auto: {key}={choice['value']} ({choice['reason']})"
            for key, choice in self.choices.items()
        ]


def plan_training(
    *,
    model_config: dict,
    postprocess: PostprocessOptions,
    options: TrainOptions,
    train_dataset: dict,
    val_dataset: dict | None = None,
    world_size: int = 1,
) -> TrainingPlan:
    """The :class:`TrainingPlan` for ``train_dataset`` (a canonical dataset: the augmented
    train split) and the config; ``val_dataset`` (the val split) only sizes the detection
    budget; ``world_size``: training processes (each gets its shard of the batches)."""
    class_names = manifest.class_names(train_dataset)

    def check(config: dict):
        skeleton = build_skeleton(
            **{k: v for k, v in config.items() if k not in ("weights", "backbone_weights")},
            num_classes=len(class_names),
            **model_kwargs(postprocess.with_max_detections(DEFAULT_MAX_DETECTIONS)),
        )
        found = data_check.check_data(skeleton, train_dataset, val_dataset=val_dataset)
        config, resolved, _ = auto_model.resolve_auto(
            config, postprocess, skeleton, found, train_dataset
        )
        return config, resolved, found

    if model_config.get("name") == AUTO:
        config, resolved, found = model_choice.choose_model(model_config, check)
    else:
        config, resolved, found = check(dict(model_config))
    batches = batches_per_epoch(
        train_dataset["images"],
        batch_size=options.batch_size,
        aspect_ratio_grouping=options.aspect_ratio_grouping,
        world_size=world_size,
    )
    steps = math.ceil(batches / options.accumulate)  # optimizer steps per epoch
    options, schedule = resolve_schedule(
        options, steps_per_epoch=steps, images=len(train_dataset["images"])
    )
    choices = {**found.pop("auto"), **schedule}
    return TrainingPlan(
        model=MappingProxyType(dict(config)),
        postprocess=resolved,
        options=options,
        choices=MappingProxyType(choices),
        check=MappingProxyType(found),
        class_names=tuple(class_names),
    )


def plan_from_params(
    *, params: str | Path, train_json: str | Path | None = None, val_json: str | Path | None = None
) -> TrainingPlan:
    """:func:`plan_training` as the train stage would run it with ``params`` (a composed
    ``params.yaml``) on ``train_json`` (default: ``paths.augmented/train.json``) and
    ``val_json`` (default: ``paths.split/val.json``): what ``detflow plan`` prints."""
    cfg = read_params(params)
    paths = cfg["paths"]
    train_json = Path(train_json or Path(paths["augmented"]) / "train.json")
    val_json = Path(val_json or Path(paths["split"]) / "val.json")
    for path in (train_json, val_json):
        if not path.is_file():
            raise DetflowError(
                f"{path}: no such split file; run `dvc repro augment` first, or pass --train "
                "and --val (canonical dataset JSONs, e.g. data/split/train.json)"
            )
    return plan_training(
        model_config=cfg["model"],
        postprocess=PostprocessOptions.from_config(cfg["postprocess"]),
        options=TrainOptions.from_config(cfg["train"]),
        train_dataset=manifest.load_dataset(train_json),
        val_dataset=manifest.load_dataset(val_json),
    )


def _shown(value):
    return " ".join(f"{v:g}" for v in value) if isinstance(value, list) else value
