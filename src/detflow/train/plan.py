"""The training plan: every ``auto`` of the train stage decided from the data in one step,
before any model, loader or optimizer is built.

:func:`plan_training` reads the train split (and the val split's densest image, for the
detection budget; the test split is never read) and the config, and returns a frozen
:class:`TrainingPlan`: the model config, post-processing and training options with every
``auto`` resolved, each choice with its value and reason, and the data check they rest on.
In order (each step sees the previous one's result):

0. ``model.tiles`` (:mod:`detflow.train.auto_tiles`): tiles cut from the full-resolution
   images, or whole images; where tiled, every later step measures the tiles (metadata only:
   :func:`~detflow.data.tile_dataset.tiled_manifest`) and the input size is the tile's.
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
from collections import Counter
from pathlib import Path
from types import MappingProxyType

import torch

from detflow.core.errors import ConfigError, DetflowError
from detflow.core.files import write_json
from detflow.core.machine import machine_info
from detflow.core.options import read_params
from detflow.core.tile_settings import TileSettings
from detflow.data import manifest
from detflow.data.tile_dataset import tile_dataset, tiled_manifest
from detflow.data.torch_dataset import batches_per_epoch
from detflow.model.build import AUTO, build_skeleton
from detflow.model.postprocess import model_kwargs
from detflow.model.postprocess_config import DEFAULT_MAX_DETECTIONS, PostprocessOptions
from detflow.train import auto_model, data_check, model_choice
from detflow.train.auto_schedule import resolve_schedule
from detflow.train.auto_tiles import EMPTY_RATE, MIN_VISIBLE, resolve_tiles
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
    tiles: MappingProxyType | None = None

    def to_dict(self) -> dict:
        """The JSON-ready record (``plan.json``, the checkpoints' ``plan``)."""
        return {
            "schema": PLAN_SCHEMA,
            "choices": {k: dict(v) for k, v in self.choices.items()},
            "model": dict(self.model),
            "postprocess": self.postprocess.to_dict(),
            "train": dataclasses.asdict(self.options),
            "class_names": list(self.class_names),
            "tiles": dict(self.tiles) if self.tiles else None,
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
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny tensor ops: on 2 cores 0.6 s against 1.5-3 s
    try:
        return _plan(model_config, postprocess, options, train_dataset, val_dataset, world_size)
    finally:
        torch.set_num_threads(threads)


def _plan(model_config, postprocess, options, train_dataset, val_dataset, world_size):
    class_names = manifest.class_names(train_dataset)
    whole_image_boxes = max(_densest(train_dataset), _densest(val_dataset))
    model_config, tiling, tile_choices, train_dataset, val_dataset = _tiling(
        model_config, train_dataset, val_dataset, seed=options.seed
    )
    if tiling and world_size > 1:
        raise ConfigError(
            "model.tiles: training on tiles runs in one process for now (torchrun ranks "
            "would cut the same tiles); set model.tiles=off or train without torchrun"
        )

    def check(config: dict):
        skeleton = build_skeleton(
            **{k: v for k, v in config.items() if k not in ("weights", "backbone_weights")},
            num_classes=len(class_names),
            **model_kwargs(postprocess.with_max_detections(DEFAULT_MAX_DETECTIONS)),
        )
        found = data_check.check_data(skeleton, train_dataset, val_dataset=val_dataset)
        config, resolved, _ = auto_model.resolve_auto(
            config,
            postprocess,
            skeleton,
            found,
            train_dataset,
            whole_image_boxes=whole_image_boxes if tiling else 0,
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
    choices = {**tile_choices, **found.pop("auto"), **schedule}
    if tiling:  # the merged full image's cap: the model's, resolved above
        tiling = {**tiling, "max_detections": resolved.max_detections}
    return TrainingPlan(
        model=MappingProxyType(dict(config)),
        postprocess=resolved,
        options=options,
        choices=MappingProxyType(choices),
        check=MappingProxyType(found),
        class_names=tuple(class_names),
        tiles=MappingProxyType(tiling) if tiling else None,
    )


def _tiling(model_config: dict, train_dataset: dict, val_dataset: dict | None, *, seed: int):
    """``model.tiles`` (:mod:`detflow.train.auto_tiles`): the model config without it (its
    input size the tile's where tiled), the tiles record (None: whole images), the choices
    (none where the config has no ``tiles`` key), and the train and val datasets the rest
    of the plan measures: their tiles where tiled (metadata only, no pixels)."""
    config = {k: v for k, v in model_config.items() if k != "tiles"}
    if "tiles" not in model_config:
        return config, None, {}, train_dataset, val_dataset
    spec, choice = resolve_tiles(
        model_config["tiles"], min_size=config.get("min_size", AUTO), dataset=train_dataset
    )
    choices = {"model.tiles": choice}
    if spec is None:
        return config, None, choices, train_dataset, val_dataset
    cut = {"size": spec.size, "overlap": spec.overlap, "min_visible": MIN_VISIBLE}
    cut.update(empty_rate=EMPTY_RATE, seed=seed)
    tiled_train, counts = tiled_manifest(train_dataset, **cut)
    tiled_val = tiled_manifest(val_dataset, **cut)[0] if val_dataset else None
    config.update(min_size=spec.size, max_size=spec.size)
    choices["model.min_size"] = {
        "value": spec.size,
        "reason": "the tile size: a tile enters the model without resizing",
    }
    merge = TileSettings(spec.size, spec.overlap).to_dict()  # its default merge across tiles
    return config, {**cut, **merge, "counts": counts}, choices, tiled_train, tiled_val


def _densest(dataset: dict | None) -> int:
    """The most boxes on one image of ``dataset`` (0 for none)."""
    counts = Counter(a["image_id"] for a in (dataset or {}).get("annotations", []))
    return max(counts.values(), default=0)


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


def record_plan(plan: TrainingPlan, reports: str | Path) -> None:
    """Write ``plan`` to ``reports/plan.json`` (its one record: every choice and its reason,
    the data check) and the machine it is trained on to ``reports/machine.json``
    (instruction sets, runtime versions: :func:`detflow.core.machine.machine_info`), and log
    it (:meth:`TrainingPlan.log`)."""
    write_json(Path(reports) / "plan.json", plan.to_dict())
    write_json(Path(reports) / "machine.json", machine_info())
    plan.log()


def cut_training_tiles(
    plan: TrainingPlan, *, train_json: str | Path, out_dir: str | Path, max_pixels: int
) -> Path:
    """The train split as the plan trains on it: ``train_json`` itself where the plan has
    no tiles; else its tiles, cut into ``out_dir`` (:func:`~detflow.data.tile_dataset.
    tile_dataset`: the same tiles the plan measured) with ``out_dir/train.json``. Either way
    ``out_dir/tiles.json`` records the tiles (``null``: whole images) and their counts.
    Returns the JSON to train on."""
    out_dir = Path(out_dir)
    if not plan.tiles:
        write_json(out_dir / "tiles.json", {"tiles": None})
        return Path(train_json)
    cut = {k: plan.tiles[k] for k in ("size", "overlap", "min_visible", "empty_rate", "seed")}
    dataset = manifest.load_dataset(train_json)
    images = out_dir / "images"
    tiled, counts = tile_dataset(
        dataset,
        images_dir=manifest.image_dir(train_json, dataset),
        out_dir=images,
        max_pixels=max_pixels,
        **cut,
    )
    manifest.save_dataset(tiled, out_dir / "train.json", image_dir=images)
    write_json(out_dir / "tiles.json", {"tiles": cut, "counts": counts})
    return out_dir / "train.json"


def _shown(value):
    if isinstance(value, dict):
        return " ".join(f"{k} {v}" for k, v in value.items())
    return " ".join(f"{v:g}" for v in value) if isinstance(value, list) else value
