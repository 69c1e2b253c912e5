"""The stall check (detflow.train.stall): the rule on histories, and the one warning on a
tiny run that cannot learn (learning rate 1e-12) but not on the default run on data it learns."""

from __future__ import annotations

import logging

import pytest
import yaml

from detflow.model.postprocess_config import PostprocessOptions
from detflow.train import stall
from detflow.train.options import TrainOptions

from conftest import REPO
from train_helpers import POSTPROCESS, TINY_MODEL, plan_and_train, tiny_split

CHECK = {
    "data": {"small_box_share": 0.9, "input_size": [64, 64]},
    "best_possible_recall": 0.4,
    "budgets": {"densest_boxes": 3, "warnings": []},
}


def _history(*pairs):
    return [
        {"epoch": i, "train_loss": loss, "val_map50": map50}
        for i, (loss, map50) in enumerate(pairs, start=1)
    ]


def test_stalled_needs_flat_loss_near_zero_map_after_warmup():
    flat = _history((1.50, 0.01), (1.48, 0.02))
    assert stall.stalled(flat, warmup_epochs=1)
    assert not stall.stalled(flat[:1], warmup_epochs=0)  # one epoch: nothing to compare
    assert not stall.stalled(flat, warmup_epochs=2)  # still warming up
    assert not stall.stalled(_history((1.5, 0.01), (1.2, 0.02)), warmup_epochs=0)  # falling
    assert not stall.stalled(_history((1.5, 0.01), (1.49, 0.3)), warmup_epochs=0)  # learning
    assert stall.stalled(_history((1.5, 0.01), (1.6, 0.0)), warmup_epochs=0)  # rising


def test_stall_warning_names_the_measured_causes_and_what_to_set():
    text = stall.stall_warning(_history((1.5, 0.01), (1.49, 0.02)), check=CHECK, lr=1e-12)
    assert "epoch 2" in text and "best val mAP50 0.0200" in text
    assert "set train.lr" in text
    assert "best possible recall 0.40" in text and "model.anchor_sizes" in text
    assert "90% of the boxes are under 32 px" in text and "model.min_size" in text
    quiet = {
        **CHECK,
        "best_possible_recall": 0.99,
        "data": {"small_box_share": 0.0, "input_size": [64, 64]},
    }
    text = stall.stall_warning(_history((1.5, 0.0), (1.5, 0.0)), check=quiet, lr=0.02)
    assert "none of the measured causes stands out" in text


def test_a_collapsed_box_regression_is_a_stall_while_the_loss_still_falls():
    """The dense-set FCOS run at lr 0.02, seed 2 (docs/benchmarks.md): GIoU loss 1.0001 then
    1.0000, total loss 1.98 → 1.72, val mAP50 0; seed 0 of the same run learned."""
    collapsed = _history((1.98, 0.0), (1.72, 0.0))
    for epoch, giou in zip(collapsed, (1.0001, 1.0000), strict=True):
        epoch.update(train_bbox_regression=giou, train_bbox_ctrness=0.65)
    assert stall.stalled(collapsed, warmup_epochs=1)
    text = stall.stall_warning(collapsed, check=CHECK, lr=0.02)
    assert "the box regression has collapsed: its GIoU loss is 1.0000" in text
    assert "train again with another train.seed, or a lower train.lr (e.g. 0.01)" in text
    learning = _history((1.46, 0.75), (0.98, 0.88))
    for epoch, giou in zip(learning, (0.504, 0.259), strict=True):
        epoch.update(train_bbox_regression=giou, train_bbox_ctrness=0.6)
    assert not stall.stalled(learning, warmup_epochs=1)
    assert not stall.stalled(_history((1.98, 0.0), (1.72, 0.0)), warmup_epochs=1)  # falling


def test_an_ssd_box_loss_over_one_is_not_a_collapse():
    """SSDlite on the bundled set, lr 0.005 (this session): smooth-L1 box loss 2.72 while the
    total loss fell 8.29 → 7.12 (-14 %) and val mAP50 rose to 0.06 by epoch 3: learning."""
    ssd = _history((8.29, 0.005), (7.12, 0.01))
    for epoch, box in zip(ssd, (3.1, 2.72), strict=True):
        epoch.update(train_bbox_regression=box, train_classification=4.4)
    assert not stall.box_regression_collapsed(ssd[-1])
    assert not stall.stalled(ssd, warmup_epochs=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_split(tmp_path_factory.mktemp("tiny_stall"), images=12)


def _warnings(data, tmp_path, caplog, lr, model_config=TINY_MODEL, postprocess=POSTPROCESS):
    caplog.set_level(logging.WARNING, logger="detflow.train.loop")
    plan_and_train(
        model_config=model_config,
        postprocess=postprocess,
        train_json=data / "augmented" / "train.json",
        val_json=data / "split" / "val.json",
        out_dir=tmp_path,
        options=TrainOptions(epochs=3, batch_size=2, warmup_steps=2, threads=1, lr=lr),
    )
    return [r.getMessage() for r in caplog.records if "not learning" in r.getMessage()]


def test_stall_warning_fires_once_when_the_learning_rate_is_zero(data, tmp_path, caplog):
    warnings = _warnings(data, tmp_path, caplog, lr=1e-12)
    assert len(warnings) == 1
    assert "train.lr=1e-12 is tiny: set train.lr" in warnings[0]


@pytest.fixture(scope="module")
def larger_data(tmp_path_factory):
    return tiny_split(tmp_path_factory.mktemp("stall_larger"), images=32, size=128)


def test_stall_warning_is_silent_on_the_default_run(larger_data, tmp_path, caplog):
    """The default model (conf/model/auto.yaml: ImageNet trunk, auto model, input size and
    anchors), postprocess and learning rate on 24 synthetic 128 px train images: it learns
    (loss 1.75 → 1.20 → 0.93, val mAP50 up to 0.136; the 64 px fixture above has a best
    possible recall of 0, on which a stall warning at this lr is right)."""
    model = yaml.safe_load((REPO / "conf" / "model" / "auto.yaml").read_text())
    postprocess = PostprocessOptions(score_threshold=0.05, nms_iou=0.5, max_detections="auto")
    warnings = _warnings(
        larger_data,
        tmp_path,
        caplog,
        lr=TrainOptions().lr,
        model_config=model,
        postprocess=postprocess,
    )
    assert warnings == []
