"""Training engine, fast tier: options, optimizers, schedules, freezing, checkpoint content,
determinism, early stopping and the non-finite-loss stop, on tiny synthetic data."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detflow.core import faults
from detflow.core import seeding as rng
from detflow.core.errors import ConfigError, DetflowError
from detflow.data import manifest
from detflow.data.torch_dataset import DetectionDataset, GroupedBatchSampler, train_loader
from detflow.model import backbone
from detflow.model.build import build_model
from detflow.model.checkpoint_file import read_checkpoint
from detflow.model.restore import load_checkpoint
from detflow.train.optimizers import Schedule, build_optimizer
from detflow.train.options import TrainOptions

from train_helpers import POSTPROCESS, TINY_MODEL, plan_and_train, tiny_split, without_timing


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_split(tmp_path_factory.mktemp("tiny"))


def _train(data, out, *, model=None, config=None, on_epoch_end=None, **options):
    settings = {"epochs": 1, "batch_size": 2, "warmup_steps": 2, "threads": 1, **options}
    return plan_and_train(
        model_config={**TINY_MODEL, **(model or {})},
        postprocess=POSTPROCESS,
        train_json=data / "augmented" / "train.json",
        val_json=data / "split" / "val.json",
        out_dir=out,
        options=TrainOptions(**settings),
        config=config,
        on_epoch_end=on_epoch_end,
    )


def _tiny(name="fasterrcnn_mobilenet_v2", **kwargs):
    return build_model(**{**TINY_MODEL, "name": name, **kwargs}, num_classes=2)


# --- options ---------------------------------------------------------------------------


def test_options_from_config_validate_and_name_the_key():
    options = TrainOptions.from_config({"epochs": 2, "unfreeze": {"0": 0, "3": 6}})
    assert options.unfreeze == {0: 0, 3: 6}
    assert [options.trainable_stages(done, 3) for done in (0, 2, 3, 9)] == [0, 0, 6, 6]
    assert TrainOptions().trainable_stages(5, 3) == 3
    with pytest.raises(ConfigError, match="train.bogus is not a train option; allowed: accum"):
        TrainOptions.from_config({"bogus": 1})
    with pytest.raises(ConfigError, match="train.optimizer='lamb'.*sgd, adam, adamw"):
        TrainOptions(optimizer="lamb")
    with pytest.raises(ConfigError, match="train.amp='fp8'.*none, bf16, fp16"):
        TrainOptions(amp="fp8")
    with pytest.raises(ConfigError, match="train.schedule='linear'"):
        TrainOptions(schedule="linear")
    with pytest.raises(ConfigError, match="train.accumulate=0"):
        TrainOptions(accumulate=0)
    with pytest.raises(ConfigError, match="train.unfreeze"):
        TrainOptions.from_config({"unfreeze": {"x": 1}})
    with pytest.raises(ConfigError, match="train.unfreeze=\\[1\\] must be a mapping or null"):
        TrainOptions.from_config({"unfreeze": [1]})
    with pytest.raises(ConfigError, match="train.epochs=2.5 must be an integer or auto$"):
        TrainOptions(epochs=2.5)
    with pytest.raises(ConfigError, match="train.epochs=0 must be an integer > 0"):
        TrainOptions(epochs=0)
    with pytest.raises(ConfigError, match="train.grad_clip_norm='x' must be a number or null"):
        TrainOptions.from_config({"grad_clip_norm": "x"})
    assert TrainOptions.from_config({"milestones": [3, 6]}).milestones == (3, 6)
    with pytest.raises(ConfigError, match="train.nesterov=true needs train.optimizer=sgd"):
        TrainOptions(optimizer="adam", nesterov=True)


def test_an_impossible_unfreeze_plan_fails_before_training(data, tmp_path):
    with pytest.raises(ConfigError, match="train.unfreeze=99: .* has 6 stages; use 0..6"):
        _train(data, tmp_path, unfreeze={3: 99})
    assert not (tmp_path / "last.pt").exists()


def test_val_classes_must_be_the_training_classes(data, tmp_path):
    source = data / "split" / "val.json"
    val = manifest.load_dataset(source)
    names = [c["name"] for c in val["categories"]][::-1]  # same ids, swapped names
    val["categories"] = [{**c, "name": n} for c, n in zip(val["categories"], names, strict=True)]
    renamed = tmp_path / "val.json"
    manifest.save_dataset(val, renamed, image_dir=manifest.image_dir(source, val))
    with pytest.raises(DetflowError, match="differ from the model's"):
        plan_and_train(
            model_config=TINY_MODEL,
            postprocess=POSTPROCESS,
            train_json=data / "augmented" / "train.json",
            val_json=renamed,
            out_dir=tmp_path / "out",
            options=TrainOptions(epochs=1, batch_size=2, threads=1),
        )


# --- optimizers and schedules ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)],
)
def test_optimizer_has_backbone_and_head_groups(name, kind):
    model = _tiny()
    optimizer = build_optimizer(
        model, name=name, lr=0.1, weight_decay=1e-4, nesterov=True, backbone_lr_factor=0.1
    )
    assert isinstance(optimizer, kind)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["head"]["lr"] == 0.1 and groups["backbone"]["lr"] == pytest.approx(0.01)
    trunk_ids = {id(p) for p in backbone.trunk(model).parameters()}
    assert {id(p) for p in groups["backbone"]["params"]} == trunk_ids
    everything = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(everything) == sorted(id(p) for p in model.parameters())
    if name == "sgd":
        assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.9


def _schedule(kind, **kwargs):
    optimizer = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "base_lr": 1.0}])
    settings = {"warmup_steps": 0, "steps_per_epoch": 10, "total_steps": 100, **kwargs}
    return optimizer, Schedule(optimizer, kind=kind, **settings)


def _run_epochs(optimizer, schedule, maps):
    lrs = []
    for value in maps:
        for _ in range(10):
            schedule.step()
        schedule.end_epoch(value)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_warmup_is_linear_then_cosine_reaches_zero():
    optimizer, schedule = _schedule("cosine", warmup_steps=4)
    seen = [optimizer.param_groups[0]["lr"]]
    for _ in range(3):
        schedule.step()
        seen.append(optimizer.param_groups[0]["lr"])
    cosine = [0.5 * (1 + math.cos(math.pi * s / 100)) for s in range(4)]
    assert seen == pytest.approx(
        [w * c for w, c in zip([0.25, 0.5, 0.75, 1.0], cosine, strict=True)]
    )
    for _ in range(97):
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_step_exponential_and_plateau_schedules():
    lrs = _run_epochs(*_schedule("step", milestones=(2, 4), gamma=0.1), [0.0] * 5)
    assert lrs == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01])
    lrs = _run_epochs(*_schedule("exponential", gamma=0.5), [0.0] * 3)
    assert lrs == pytest.approx([0.5, 0.25, 0.125])
    # plateau: lowered once val mAP50 has not improved for more than `patience` epochs
    lrs = _run_epochs(*_schedule("plateau", gamma=0.1, patience=1), [0.1, 0.2, 0.2, 0.2, 0.3])
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1])


def test_schedule_state_round_trips():
    optimizer, schedule = _schedule("plateau", patience=0)
    _run_epochs(optimizer, schedule, [0.5, 0.4])
    other_optimizer, other = _schedule("plateau", patience=0)
    other.load_state_dict(schedule.state_dict())
    assert other_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == 0.1


# --- freezing ---------------------------------------------------------------------------


def _trainable_stages(model):
    return [any(p.requires_grad for m in s for p in m.parameters()) for s in backbone.stages(model)]


def test_trainable_stages_freeze_from_the_input_side():
    model = _tiny(trainable_backbone_layers=2)
    assert _trainable_stages(model) == [False] * 4 + [True] * 2
    backbone.set_trainable_stages(model, 6)
    assert _trainable_stages(model) == [True] * 6
    backbone.set_trainable_stages(model, 0)
    assert not any(p.requires_grad for p in backbone.trunk(model).parameters())
    assert all(p.requires_grad for p in model.roi_heads.parameters())
    with pytest.raises(ConfigError, match="train.unfreeze=7.*6 stages; use 0..6"):
        backbone.set_trainable_stages(model, 7, key="train.unfreeze")


def test_frozen_batch_norm_keeps_its_statistics_in_train_mode():
    model = _tiny("fasterrcnn_mobilenet_v3_large_320_fpn", trainable_backbone_layers=1)
    backbone.train_mode(model)
    norms = [m for m in backbone.trunk(model).modules() if isinstance(m, nn.BatchNorm2d)]
    frozen = [m for m in norms if not m.weight.requires_grad]
    assert frozen and all(not m.training for m in frozen)
    assert all(m.training for m in norms if m.weight.requires_grad)


def test_grouped_batches_keep_one_aspect_per_batch():
    sampler = list(range(10))
    groups = [0, 1] * 5
    batches = list(GroupedBatchSampler(sampler, groups, 2))
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == sampler
    assert len(GroupedBatchSampler(sampler, groups, 2)) == len(batches) == 6


def test_loader_order_is_reproducible(data):
    dataset = DetectionDataset(data / "augmented" / "train.json")

    def order(**kwargs):
        loader = train_loader(dataset, batch_size=2, seed=3, **kwargs)
        return [[t["image_id"] for t in targets] for _ in range(2) for _, targets in loader]

    assert order() == order()
    assert order(workers=2, aspect_ratio_grouping=True) == order(aspect_ratio_grouping=True)


# --- training runs ----------------------------------------------------------------------


def test_two_runs_give_identical_weights(data, tmp_path):
    first = _train(data, tmp_path / "a", epochs=2)
    second = _train(data, tmp_path / "b", epochs=2, workers=2)  # workers change nothing
    a, b = (read_checkpoint(tmp_path / n / "last.pt") for n in "ab")
    assert a["model_state"].keys() == b["model_state"].keys()
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    assert without_timing(a["history"]) == without_timing(b["history"])
    assert without_timing([first]) == without_timing([second])


def test_checkpoint_holds_the_training_state_and_loads_weights_only(data, tmp_path):
    config = {"train": {"epochs": 1}, "note": "resolved config"}
    best = _train(data, tmp_path, config=config, optimizer="adamw", accumulate=2)
    for name in ("best.pt", "last.pt"):
        state = torch.load(tmp_path / name, weights_only=True)
        assert state["epoch"] == 1 and state["class_names"] == ["circle", "square"]
        assert state["config"] == config and state["model"] == TINY_MODEL
        assert state["optimizer_state"]["state"]  # AdamW moments
        assert state["scheduler_state"]["step"] == 2  # 3 batches, accumulate 2 → 2 steps
        assert state["scaler_state"] == {}
        assert set(state["rng_state"]) == {"python", "numpy", "torch", "cuda", "loader"}
        assert state["train_state"]["epoch"] == 1
        assert state["history"] == [state["metrics"]] and state["metrics"] == best
    assert {"train_loss_classifier", "train_loss_objectness", "lr", "lr_backbone"} <= set(best)
    model, _ = load_checkpoint(tmp_path / "best.pt")
    expected = build_model(**TINY_MODEL, num_classes=2)
    expected.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True)["model_state"])
    image = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        assert torch.equal(model(image)[0]["scores"], expected.eval()(image)[0]["scores"])


def test_rng_state_round_trips_through_weights_only(tmp_path):
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(5)
    rng.seed_everything(1)
    torch.save(rng.get_state(generator), tmp_path / "rng.pt")
    expected = (
        random.random(),
        np.random.rand(),
        torch.rand(1),
        torch.rand(1, generator=generator),
    )
    rng.seed_everything(2)
    other = torch.Generator()
    rng.set_state(torch.load(tmp_path / "rng.pt", weights_only=True), other)
    again = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=other))
    assert expected[:2] == again[:2]
    assert torch.equal(expected[2], again[2]) and torch.equal(expected[3], again[3])


def test_frozen_backbone_and_progressive_unfreezing(data, tmp_path):
    rng.seed_everything(0)  # what train_detector does before building the model
    initial = backbone.trunk(build_model(**TINY_MODEL, num_classes=2)).state_dict()

    def trunk_changed():
        state = read_checkpoint(tmp_path / "last.pt")["model_state"]
        return [not torch.equal(state[f"backbone.0.{k}"], v) for k, v in initial.items()]

    plan = {0: 0, 1: 6}  # epoch 1: frozen; from epoch 2: all six stages train
    _train(data, tmp_path, unfreeze=plan)
    assert not any(trunk_changed())
    _train(data, tmp_path, unfreeze=plan, epochs=2, resume=True)  # a longer run may resume
    changed = trunk_changed()
    assert changed[0] and any(changed)  # the stem (frozen by the model config) trains too


def test_channels_last_grouped_batches_and_step_schedule_train_on_cpu(data, tmp_path):
    best = _train(
        data, tmp_path, epochs=2, channels_last=True, aspect_ratio_grouping=True,
        schedule="step", milestones=(1,), optimizer="sgd", nesterov=True, backbone_lr_factor=0.1,
    )  # fmt: skip
    assert math.isfinite(best["train_loss"])
    history = read_checkpoint(tmp_path / "last.pt")["history"]
    assert history[1]["lr_backbone"] == pytest.approx(0.1 * history[1]["lr"])
    assert history[0]["lr"] == pytest.approx(TrainOptions().lr)
    assert history[1]["lr"] == pytest.approx(0.1 * TrainOptions().lr)  # × gamma after epoch 1


def test_resume_with_other_settings_is_refused(data, tmp_path):
    _train(data, tmp_path)
    with pytest.raises(ConfigError, match=r"train.resume: .*\(train.lr\)"):
        _train(data, tmp_path, resume=True, lr=0.5)


def test_early_stopping_on_val_map(data, tmp_path):
    epochs = []
    # a learning rate too small to change anything: val mAP50 never improves after epoch 1
    _train(data, tmp_path, epochs=5, lr=1e-12, early_stopping_patience=2,
           on_epoch_end=lambda epoch, metrics: epochs.append(epoch))  # fmt: skip
    assert epochs == [1, 2, 3]
    state = read_checkpoint(tmp_path / "last.pt")
    assert state["train_state"]["stopped"] and state["epoch"] == 3
    assert read_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_last_good(data, tmp_path, monkeypatch):
    import detflow.train.run as engine

    real_build = engine.build_model

    def poisoned(**kwargs):
        model = real_build(**kwargs)
        forward, calls = model.forward, []

        def forward_nan_at_epoch_2(images, targets=None):
            out = forward(images, targets)
            if model.training:
                calls.append(1)
                if len(calls) > 2:  # 2 batches per epoch: epoch 2, step 1
                    out = {k: v * float("nan") for k, v in out.items()}
            return out

        model.forward = forward_nan_at_epoch_2
        return model

    monkeypatch.setattr(engine, "build_model", poisoned)
    with pytest.raises(DetflowError, match=r"non-finite loss nan at epoch 2 step 1.*last\.pt"):
        _train(data, tmp_path, epochs=3, batch_size=3)
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_kill_points_parse_and_count(monkeypatch):
    faults.reset()
    assert faults.kill_points("train.batch:3, collect.image:1") == {
        "train.batch": 3,
        "collect.image": 1,
    }
    with pytest.raises(ConfigError, match="DETFLOW_KILL_AT"):
        faults.kill_points("train.batch")
    monkeypatch.setenv(faults.ENV, "other.point:1")
    for _ in range(3):
        faults.maybe_kill("train.batch")  # not named: never kills
    assert faults._calls["train.batch"] == 3
    faults.reset()


def test_amp_is_ignored_on_cpu_with_a_log_line(caplog):
    from detflow.train.run import amp_mode

    with caplog.at_level("INFO", logger="detflow.train.run"):
        assert amp_mode("bf16", torch.device("cpu")) == (None, None)
    assert "train.amp=bf16 ignored on cpu" in caplog.text
    assert amp_mode("none", torch.device("cpu")) == (None, None)


def test_val_loss_is_logged_and_changes_neither_weights_nor_history(data, tmp_path, monkeypatch):
    """The per-epoch val loss (train-mode forward, no gradients) leaves training as it was:
    the same weights and the same history, apart from the new column."""
    from detflow.train import loop

    with_loss = _train(data, tmp_path / "a", epochs=2)
    monkeypatch.setattr(loop, "val_loss", lambda run, val_set: float("nan"))
    _train(data, tmp_path / "b", epochs=2)
    a, b = (read_checkpoint(tmp_path / n / "last.pt") for n in "ab")
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    assert all(math.isfinite(m["val_loss"]) and m["val_loss"] > 0 for m in a["history"])
    strip = [{k: v for k, v in m.items() if k != "val_loss"} for m in a["history"]]
    assert without_timing(strip) == without_timing(
        [{k: v for k, v in m.items() if k != "val_loss"} for m in b["history"]]
    )
    assert "val_loss" in with_loss
