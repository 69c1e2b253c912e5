"""``auto`` choices (detflow.train.auto_model.resolve_auto): the defaults where the data
suits them, fitted anchors where no default anchor matches, RoIs and detections from the
densest images; each with its reason, in the checkpoint and the train report's metrics."""

from __future__ import annotations

import numpy as np
import pytest

from detflow.core.errors import ConfigError
from detflow.data import manifest
from detflow.model.build import build_model
from detflow.model.checkpoint_file import read_checkpoint, resolve_postprocess
from detflow.model.postprocess_config import PostprocessOptions
from detflow.model.restore import load_checkpoint
from detflow.train import auto_model, data_check
from detflow.train.auto_schedule import resolve_schedule
from detflow.train.options import TrainOptions
from detflow.train.plan import TrainingPlan

from train_helpers import TINY_MODEL, plan_and_train, tiny_split

AUTO_MODEL = {
    "name": "fasterrcnn_mobilenet_v2",
    "backbone_weights": "none",
    "min_size": 416,
    "max_size": 416,
    "anchor_sizes": "auto",
    "anchor_aspect_ratios": "auto",
    "rois_per_image": "auto",
}
AUTO_POSTPROCESS = PostprocessOptions(score_threshold=0.05, nms_iou=0.5, max_detections="auto")


def _dataset(boxes_per_image, xywh):
    dataset = manifest.new_dataset(class_names=["a"])
    for i, count in enumerate(boxes_per_image):
        image = manifest.add_image(
            dataset, file_name=f"{i}.png", width=416, height=416, source="s", group=str(i)
        )
        for _ in range(count):
            manifest.add_box(dataset, image_id=image, category_id=1, xywh=xywh)
    return dataset


def _resolve(dataset, test=None, config=AUTO_MODEL, postprocess=AUTO_POSTPROCESS):
    plain = {k: (None if v == "auto" and "size" not in k else v) for k, v in config.items()}
    model = build_model(**plain, num_classes=1)
    check = data_check.check_data(model, dataset, val_dataset=test)
    return (*auto_model.resolve_auto(config, postprocess, model, check, dataset), check)


def test_auto_keeps_the_defaults_when_the_data_suits_them():
    # 128² boxes centred on grid points: an exact default anchor; 1-2 boxes per image
    config, postprocess, choices, check = _resolve(_dataset([1, 2, 1], [0, 0, 128, 128]))
    assert config["anchor_sizes"] == [32, 64, 128, 256, 512]
    assert config["anchor_aspect_ratios"] == [0.5, 1.0, 2.0]
    assert config["rois_per_image"] == 64 and postprocess.max_detections == 100
    assert set(choices) == {
        "model.anchor_sizes",
        "model.anchor_aspect_ratios",
        "model.rois_per_image",
        "postprocess.max_detections",
    }
    assert "best possible recall 1.000 >= 0.75" in choices["model.anchor_sizes"]["reason"]
    assert check["auto"] is choices and check["budgets"]["warnings"] == []
    plan = TrainingPlan(
        model=config,
        postprocess=postprocess,
        options=TrainOptions(),
        choices=choices,
        check=check,
        class_names=("a",),
    )
    assert plan.metrics() == {
        "best_possible_recall": 1.0,
        "auto": {
            "anchor_sizes": "32 64 128 256 512",
            "anchor_aspect_ratios": "0.5 1 2",
            "rois_per_image": 64,
            "max_detections": 100,
        },
    }


def test_auto_fits_anchors_no_default_anchor_matches():
    # 48×288 boxes (h/w 6) centred on a grid point: no default anchor reaches IoU 0.5
    config, _, choices, check = _resolve(_dataset([1, 1], [168, 48, 48, 288]))
    assert check["best_possible_recall_default"] == 0.0
    assert config["anchor_sizes"] == [118] and config["anchor_aspect_ratios"] == [6.0]
    assert check["best_possible_recall"] == 1.0
    assert "fitted" in choices["model.anchor_sizes"]["reason"]
    build_model(**config, num_classes=1)  # the resolved config builds


def test_auto_fits_only_what_is_auto():
    config = {**AUTO_MODEL, "anchor_sizes": [118]}
    resolved, *_ = _resolve(_dataset([1], [168, 48, 48, 288]), config=config)
    assert resolved["anchor_sizes"] == [118] and resolved["anchor_aspect_ratios"] == [6.0]


def test_auto_budgets_follow_the_densest_images():
    train = _dataset([30, 30, 1], [0, 0, 128, 128])
    test = _dataset([150], [0, 0, 128, 128])
    config, postprocess, choices, check = _resolve(train, test)
    assert config["rois_per_image"] == 512  # p95 of (30, 30, 1) = 30 boxes × 16, capped
    assert postprocess.max_detections == 150  # the densest test image
    assert check["budgets"]["rois_per_image"] == 512 and check["budgets"]["warnings"] == []


def test_set_values_are_kept_and_warned_about():
    config = {**AUTO_MODEL, "rois_per_image": 64}
    postprocess = PostprocessOptions(score_threshold=0.05, nms_iou=0.5, max_detections=100)
    train = _dataset([30, 30], [0, 0, 128, 128])
    test = _dataset([150], [0, 0, 128, 128])
    resolved, resolved_pp, choices, check = _resolve(train, test, config, postprocess)
    assert resolved["rois_per_image"] == 64 and resolved_pp.max_detections == 100
    assert "model.rois_per_image" not in choices and "postprocess.max_detections" not in choices
    assert len(check["budgets"]["warnings"]) == 2


def test_adapted_keys_are_checked():
    with pytest.raises(ConfigError, match="model.anchor_sizes: only fasterrcnn_mobilenet_v2"):
        build_model(name="fcos_mobilenet_v2", num_classes=1, anchor_sizes=[32])
    build_model(name="fcos_mobilenet_v2", num_classes=1, anchor_sizes="auto")  # no-op
    with pytest.raises(ConfigError, match="model.anchor_aspect_ratios=-1"):
        build_model(**{**TINY_MODEL, "anchor_aspect_ratios": [-1]}, num_classes=1)
    with pytest.raises(ConfigError, match="model.rois_per_image=2.5 must be an integer"):
        build_model(**{**TINY_MODEL, "rois_per_image": 2.5}, num_classes=1)


def test_postprocess_auto_is_resolved_from_the_checkpoint():
    assert AUTO_POSTPROCESS.with_max_detections(7).max_detections == 7
    fixed = AUTO_POSTPROCESS.with_max_detections(7)
    assert fixed.with_max_detections(9) is fixed
    with pytest.raises(ConfigError, match="postprocess.max_detections='many'"):
        PostprocessOptions(score_threshold=0.05, nms_iou=0.5, max_detections="many")
    state = {"postprocess": fixed.to_dict()}
    assert resolve_postprocess(AUTO_POSTPROCESS, state).max_detections == 7


def _train_one_epoch(model_config: dict, data, out_dir) -> list:
    """One tiny epoch of ``model_config`` on ``data`` (tiny_split); the plans seen."""
    seen = []
    plan_and_train(
        model_config=model_config,
        postprocess=AUTO_POSTPROCESS,
        train_json=data / "augmented" / "train.json",
        val_json=data / "split" / "val.json",
        out_dir=out_dir,
        options=TrainOptions(epochs=1, batch_size=2, warmup_steps=2, threads=1),
        on_plan=seen.append,
    )
    return seen


def test_training_stores_the_resolved_choices(tmp_path):
    data = tiny_split(tmp_path / "data")
    model = {**TINY_MODEL, **{k: "auto" for k in ("anchor_sizes", "anchor_aspect_ratios")}}
    seen = _train_one_epoch({**model, "rois_per_image": "auto"}, data, tmp_path / "out")
    state = read_checkpoint(tmp_path / "out" / "last.pt")
    assert isinstance(state["model"]["anchor_sizes"], list)
    assert state["model"]["rois_per_image"] == 64
    assert state["postprocess"]["max_detections"] == 100
    assert state["plan"] == seen[0].to_dict()  # one record: the plan, as made
    assert set(seen[0].choices) == set(state["plan"]["choices"])
    model_, _ = load_checkpoint(tmp_path / "out" / "last.pt", postprocess=AUTO_POSTPROCESS)
    assert model_.roi_heads.detections_per_img == 100


def _small_boxes(side: float, *, images: int = 6, per_image: int = 12):
    """``images`` 416² images with ``per_image`` ``side``² boxes at seeded random places."""
    rng = np.random.default_rng(0)
    dataset = manifest.new_dataset(class_names=["a"])
    for i in range(images):
        image = manifest.add_image(
            dataset, file_name=f"{i}.png", width=416, height=416, source="s", group=str(i)
        )
        for _ in range(per_image):
            x, y = rng.uniform(0, 416 - side, 2)
            manifest.add_box(dataset, image_id=image, category_id=1, xywh=[x, y, side, side])
    return dataset


AUTO_SIZE_MODEL = {**AUTO_MODEL, "min_size": "auto", "max_size": "auto"}


def test_auto_input_size_stays_at_416_when_the_model_matches_the_boxes():
    config, _, choices, check = _resolve(_dataset([1, 2], [0, 0, 128, 128]), config=AUTO_SIZE_MODEL)
    assert (config["min_size"], config["max_size"]) == (416, 416)
    assert choices["model.min_size"]["reason"] == "best possible recall 1.000 >= 0.75"
    assert check["data"]["input_size"] == [416, 416]


def test_auto_input_size_grows_when_objects_are_small_for_the_strides():
    # 32² boxes anywhere: the stride-32 map matches 36 % at 416 px, 72 % at 640 px
    config, _, choices, check = _resolve(_small_boxes(32), config=AUTO_SIZE_MODEL)
    assert (config["min_size"], config["max_size"]) == (640, 640)
    assert "0.361 at 416 px < 0.75" in choices["model.min_size"]["reason"]
    assert check["data"]["input_size"] == [640, 640]  # the report is at the chosen size
    assert check["best_possible_recall"] > check["best_possible_recall_default"]


def test_auto_input_size_keeps_416_when_larger_inputs_do_not_help():
    # 12² boxes: far below the stride; no size in the CPU budget raises the recall enough
    config, _, choices, _ = _resolve(_small_boxes(12), config=AUTO_SIZE_MODEL)
    assert config["min_size"] == 416
    assert "raise it by less than 0.05" in choices["model.min_size"]["reason"]


@pytest.mark.parametrize(
    ("steps", "epochs", "warmup"), [(71, 8, 50), (10, 40, 10), (25, 23, 25), (1000, 3, 50)]
)
def test_auto_schedule_scales_epochs_and_warmup_to_the_dataset(steps, epochs, warmup):
    options, choices = resolve_schedule(TrainOptions(), steps_per_epoch=steps, images=steps * 4)
    assert (options.epochs, options.warmup_steps) == (epochs, warmup)
    assert set(choices) == {"train.epochs", "train.warmup_steps"}
    given, none = resolve_schedule(
        TrainOptions(epochs=2, warmup_steps=0), steps_per_epoch=9, images=1
    )
    assert (given.epochs, given.warmup_steps, none) == (2, 0, {})


def test_auto_schedule_rejects_other_words():
    with pytest.raises(ConfigError, match="train.epochs='many' must be an integer or auto$"):
        TrainOptions(epochs="many")


def test_an_auto_model_trains_the_chosen_detector_and_records_why(tmp_path):
    """``model.name: auto`` on 64-px synthetic shapes: FCOS is trained, and the choice is in
    the checkpoint, the data check and its metrics."""
    data = tiny_split(tmp_path / "data")
    auto = {
        **TINY_MODEL,
        "name": "auto",
        **{k: "auto" for k in ("anchor_sizes", "anchor_aspect_ratios", "rois_per_image")},
    }
    seen = _train_one_epoch(auto, data, tmp_path / "out")
    state = read_checkpoint(tmp_path / "out" / "last.pt")
    assert state["model"]["name"] == "fcos_mobilenet_v2"
    assert "rois_per_image" not in state["model"] and "test_proposals" not in state["model"]
    choice = state["plan"]["choices"]["model.name"]
    assert choice["value"] == "fcos_mobilenet_v2" and "best possible recall" in choice["reason"]
    recalls = state["plan"]["data_check"]["best_possible_recall_by_model"]
    assert recalls["fcos_mobilenet_v2"] == max(recalls.values())
    shown = seen[0].metrics()  # what dvc exp show lists
    assert shown["auto"]["name"] == "fcos_mobilenet_v2"
    model, _ = load_checkpoint(tmp_path / "out" / "last.pt")
    assert type(model).__name__ == "FCOS"


@pytest.mark.parametrize(
    ("fcos", "faster_rcnn", "chosen", "reason"),
    [
        (0.80, 0.99, "fcos_mobilenet_v2", "best possible recall 0.800 >= 0.75 at 416 px"),
        (0.60, 0.70, "fasterrcnn_mobilenet_v2", "anchors match more: 0.700 at 640 px"),
        (0.60, 0.60, "fcos_mobilenet_v2", "and fasterrcnn_mobilenet_v2 matches no more (0.600)"),
    ],
)
def test_auto_prefers_fcos_unless_faster_rcnn_matches_more_boxes(fcos, faster_rcnn, chosen, reason):
    from detflow.train.model_choice import choose_model

    recalls = {"fcos_mobilenet_v2": (fcos, 416), "fasterrcnn_mobilenet_v2": (faster_rcnn, 640)}
    built = []

    def check(config):
        built.append(config["name"])
        recall, size = recalls[config["name"]]
        resolved = {**config, "min_size": size}
        return resolved, AUTO_POSTPROCESS, {"best_possible_recall": recall, "auto": {}}

    config, _, found = choose_model({**TINY_MODEL, "name": "auto"}, check)
    assert config["name"] == chosen and reason in found["auto"]["model.name"]["reason"]
    assert built == (["fcos_mobilenet_v2"] if fcos >= 0.75 else list(recalls))
    assert found["best_possible_recall_by_model"] == {k: recalls[k][0] for k in built}


def test_an_auto_model_from_a_checkpoint_is_that_checkpoints_model(tmp_path):
    from detflow.model.checkpoint_file import save_checkpoint
    from detflow.train.model_choice import choose_model

    path = tmp_path / "best.pt"
    state = {"schema": "detflow-checkpoint-v1", "model": {"name": "fcos_mobilenet_v2"}}
    save_checkpoint(state, path)
    seen = []

    def check(config):
        seen.append(config)
        return config, AUTO_POSTPROCESS, {"best_possible_recall": 1.0, "auto": {}}

    config, _, found = choose_model({**TINY_MODEL, "name": "auto", "weights": str(path)}, check)
    assert config["name"] == "fcos_mobilenet_v2" and config["weights"] == str(path)
    reason = found["auto"]["model.name"]["reason"]
    assert reason == "model.weights is a fcos_mobilenet_v2 checkpoint"
    assert len(seen) == 1  # no other candidate is built
    with pytest.raises(ConfigError, match="model.weights='COCO_V1' with model.name=auto"):
        choose_model({**TINY_MODEL, "name": "auto", "weights": "COCO_V1"}, check)
