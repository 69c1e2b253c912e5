"""Corpus cases: configs of the wrong type, range or name, and unsafe checkpoints and targets."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import yaml

from detflow.data.augment import AugmentOptions, augment_dataset
from detflow.data.clean import CleanPolicy, clean_dataset
from detflow.data.collect import CollectOptions, collect_dataset
from detflow.data.split import SplitOptions, split_dataset
from detflow.deploy.export import ExportOptions
from detflow.deploy.variants import OptimizeOptions, build_variants
from detflow.evaluate.inference import EvaluateOptions
from detflow.model.build import build_model
from detflow.model.checkpoint_file import read_checkpoint
from detflow.model.postprocess_config import PostprocessOptions
from detflow.pipeline.config_safety import check_targets
from detflow.train.options import TrainOptions

from corpus.runner import (
    DEFAULTS,
    REPO,
    Result,
    collect,
    config_error,
    registry,
    write,
)

CASES, case = registry()

# --- configs: wrong type, out of range, unknown names ------------------------------------


def _dataset(tmp: Path) -> Path:
    source = {"format": "synthetic", "num_images": 12, "image_size": 32, "classes": ["circle"]}
    collect_dataset(options=CollectOptions.from_config({**source, "seed": 3}), out_dir=tmp / "raw")
    return tmp / "raw" / "dataset.json"


def split_config(**changes):
    def run(tmp: Path) -> Result:
        options = {**DEFAULTS["split"], "seed": 0, **changes}
        result = config_error(
            lambda: split_dataset(
                in_json=_dataset(tmp),
                out_dir=tmp / "split",
                options=SplitOptions.from_config(options),
            )
        )
        assert not (tmp / "split").exists()
        return result

    return run


def train_config(**changes):
    return lambda tmp: config_error(
        lambda: TrainOptions.from_config({**DEFAULTS["train"], "seed": 0, **changes})
    )


def clean_config(**changes):
    def run(tmp: Path) -> Result:
        policy = {**DEFAULTS["clean"], **changes}
        result = config_error(
            lambda: clean_dataset(
                in_json=_dataset(tmp), out_dir=tmp / "clean", policy=CleanPolicy.from_config(policy)
            )
        )
        assert not (tmp / "clean").exists()
        return result

    return run


AUGMENT = yaml.safe_load((REPO / "conf" / "augment" / "light.yaml").read_text())


def augment_config(max_pixels=100_000_000, **changes):
    def run(tmp: Path) -> Result:
        options = {**AUGMENT, **changes}
        return config_error(
            lambda: augment_dataset(
                train_json=_dataset(tmp),
                out_dir=tmp / "aug",
                options=AugmentOptions.from_config(options, seed=0, max_pixels=max_pixels),
            )
        )

    return run


def collect_config(max_pixels=100_000_000, **source):
    return lambda tmp: collect(
        {"format": "synthetic", "num_images": 2, "image_size": 32, **source},
        tmp / "raw",
        images=2,
        boxes=0,
        item="-",
        max_pixels=max_pixels,
    )


def optimize_config(variants):
    def run(tmp: Path) -> Result:
        write(tmp / "m.onnx", b"")
        return config_error(
            lambda: build_variants(
                onnx_path=tmp / "m.onnx",
                out_dir=tmp / "opt",
                calibration=[],
                options=OptimizeOptions.from_config({"variants": variants}),
            )
        )

    return run


def model_group(tmp: Path) -> Result:
    """``-S model=…`` of an option conf/model does not have: Hydra lists the options."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException

    try:
        with initialize_config_dir(str(REPO / "conf"), version_base=None):
            compose(config_name="config", overrides=["model=yolov99"])
    except MissingConfigException as exc:
        options = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
        assert all(option in str(exc) for option in options)  # the allowed values
        return Result(f"error: {str(exc).splitlines()[0]}", message=str(exc).splitlines()[0])
    return Result("kept")


for _id, _stage, _run, _given, _expected in (
    ("split-negative-ratio", "split", split_config(train=1.1, val=-0.1, test=0.0),
     "`split.val=-0.1`", "error: split.val=-0.1 must be a number >= 0"),
    ("split-ratios-not-summing-to-1", "split", split_config(train=0.9),
     "`split.train=0.9` (sum 1.2)", "error: they must sum to 1"),
    ("split-ratio-wrong-type", "split", split_config(train="most"), "`split.train=most`",
     "error: split.train='most' must be a number"),
    ("split-unknown-mode", "split", split_config(mode="stratified"), "`split.mode=stratified`",
     "error: split.mode='stratified' is not allowed; use one of: random, predefined, kfold"),
    ("split-fold-out-of-range", "split", split_config(mode="kfold", fold=7), "`split.fold=7` of 5",
     "error: split.fold=7 must be an integer in 0..4"),
    ("model-unknown-name", "train", lambda tmp: config_error(
        lambda: build_model(name="yolov99", num_classes=2)), "`model.name=yolov99`",
     "error: model.name='yolov99' is not allowed; use one of: fasterrcnn_mobilenet_v2"),
    ("model-unknown-group-option", "train", model_group, "`-S model=yolov99` (no conf/model/"
     "yolov99.yaml)", "error: Could not find 'model/yolov99'"),
    ("train-epochs-wrong-type", "train", train_config(epochs="ten"), "`train.epochs=ten`",
     "error: train.epochs='ten' must be an integer"),
    ("train-negative-lr", "train", train_config(lr=-0.01), "`train.lr=-0.01`",
     "error: train.lr=-0.01 must be a number > 0"),
    ("train-unknown-optimizer", "train", train_config(optimizer="rmsprop"),
     "`train.optimizer=rmsprop`", "error: train.optimizer='rmsprop' is not allowed; use one of"),
    ("clean-unknown-resize", "clean", clean_config(resize="crop"), "`clean.resize=crop`",
     "error: clean.resize='crop' is not allowed; use one of: none, stretch, fit, letterbox"),
    ("clean-wrong-type", "clean", clean_config(min_box_px="big"), "`clean.min_box_px=big`",
     "error: clean.min_box_px='big' must be a number"),
    ("clean-unknown-key", "clean", clean_config(min_box=2), "`clean.min_box=2` (typo)",
     "error: clean.min_box is not a clean option; allowed:"),
    ("clean-unknown-incomplete-policy", "clean", clean_config(incomplete_images="fix"),
     "`clean.incomplete_images=fix`",
     "error: clean.incomplete_images='fix' is not allowed; use one of: drop, keep"),
    ("augment-unknown-transform", "augment", augment_config(transforms=[{"name": "Explode"}]),
     "transform `Explode`", "error: augment.transforms[0].name='Explode' is not an "
     "albumentations transform"),
    ("augment-visibility-out-of-range", "augment", augment_config(min_visibility=2),
     "`augment.min_visibility=2`", "error: augment.min_visibility=2 must be in [0, 1]"),
    ("augment-negative-copies", "augment", augment_config(copies=-1), "`augment.copies=-1`",
     "error: augment.copies=-1 must be a number >= 0"),
    ("limits-max-pixels-wrong-type", "augment", augment_config(max_pixels="huge"),
     "`limits.max_pixels=huge`", "error: limits.max_pixels='huge' must be an integer"),
    ("limits-max-pixels-negative", "collect", collect_config(max_pixels=-5),
     "`limits.max_pixels=-5`", "error: limits.max_pixels=-5 must be an integer > 0"),
    ("data-unknown-format", "collect", collect_config(format="parquet"), "`data.format=parquet`",
     "error: data.format='parquet' is not allowed; use one of: yolo, coco, voc"),
    ("data-unknown-key", "collect", collect_config(num_imgs=3), "`data.num_imgs=3` (typo)",
     "error: data.num_imgs is not a key of format 'synthetic'; allowed keys:"),
    ("data-unknown-difficult", "collect", collect_config(difficult="hard"),
     "`data.difficult=hard`",
     "error: data.difficult='hard' is not allowed; use one of: ignore, keep, drop"),
    ("optimize-unknown-variant", "optimize", optimize_config(["ort_fp32", "int4"]),
     "`optimize.variants=[ort_fp32, int4]`", "error: optimize.variants='int4' is not allowed"),
    ("postprocess-unknown-nms", "evaluate", lambda tmp: config_error(
        lambda: PostprocessOptions.from_config({**DEFAULTS["postprocess"], "nms": "greedy"})),
     "`postprocess.nms=greedy`",
     "error: postprocess.nms='greedy' is not allowed; use one of: class_aware, class_agnostic"),
    ("evaluate-iou-above-1", "evaluate", lambda tmp: config_error(
        lambda: EvaluateOptions.from_config({**DEFAULTS["evaluate"], "iou": 1.5})),
     "`evaluate.iou=1.5`", "error: evaluate.iou=1.5 must be in (0, 1]"),
    ("export-parity-images-wrong-type", "export", lambda tmp: config_error(
        lambda: ExportOptions.from_config({**DEFAULTS["export"], "parity_images": "all"})),
     "`export.parity_images=all`",
     "error: export.parity_images='all' must be an integer"),
    ("export-opset-too-old", "export", lambda tmp: config_error(
        lambda: ExportOptions.from_config({**DEFAULTS["export"], "opset": 9})),
     "`export.opset=9`", "error: export.opset=9 must be an ONNX opset >= 11"),
    ("export-negative-tolerance", "export", lambda tmp: config_error(
        lambda: ExportOptions.from_config({**DEFAULTS["export"], "max_box_error_px": -1})),
     "`export.max_box_error_px=-1`", "error: export.max_box_error_px=-1 must be a number >= 0"),
    ("postprocess-iou-above-1", "evaluate", lambda tmp: config_error(
        lambda: PostprocessOptions.from_config({**DEFAULTS["postprocess"], "nms_iou": 1.5})),
     "`postprocess.nms_iou=1.5`",
     "error: postprocess.nms_iou=1.5 must be <= 1"),
):  # fmt: skip
    case(_id, _stage, f"config: {_given}", _expected)(_run)


# --- security: checkpoints and instantiation targets ---------------------------------------


class Exploit:
    """A pickled object that would run code when unpickled without ``weights_only``."""

    def __reduce__(self):
        return (print, ("unpickled: arbitrary code ran",))


@case("checkpoint-pickled-object", "evaluate / export", "a `best.pt` holding a pickled object",
      "error: not a loadable checkpoint")  # fmt: skip
def _(tmp):
    torch.save({"schema": "detflow-checkpoint-v1", "model": Exploit()}, tmp / "best.pt")
    return config_error(lambda: read_checkpoint(tmp / "best.pt"))


@case("checkpoint-pickle-not-torch", "evaluate / export", "a plain pickle named `best.pt`",
      "error: not a loadable checkpoint")  # fmt: skip
def _(tmp):
    write(tmp / "best.pt", pickle.dumps(Exploit(), protocol=2))
    return config_error(lambda: read_checkpoint(tmp / "best.pt"))


@case("checkpoint-truncated", "evaluate / export", "a `best.pt` cut in half",
      "error: not a loadable checkpoint")  # fmt: skip
def _(tmp):
    torch.save({"schema": "detflow-checkpoint-v1", "w": torch.zeros(100)}, tmp / "full.pt")
    write(tmp / "best.pt", (tmp / "full.pt").read_bytes()[:300])
    return config_error(lambda: read_checkpoint(tmp / "best.pt"))


@case("target-outside-project", "every stage", "`model.head._target_: os.system`",
      "error: model.head._target_='os.system' is not allowed")  # fmt: skip
def _(tmp):
    config = {k: v for k, v in DEFAULTS.items() if k != "hydra"}  # what a stage gets
    config["model"] = {"name": "x", "head": {"_target_": "os.system"}}
    return config_error(lambda: check_targets(config))


@case("target-inside-project", "every stage", "`_target_: torchvision.ops.nms` in a list",
      "kept")  # fmt: skip
def _(tmp):
    return config_error(lambda: check_targets({"a": [{"_target_": "torchvision.ops.nms"}]}))
