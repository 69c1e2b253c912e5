"""Training on CUDA: mixed precision (bf16, fp16 with a gradient scaler) and channels-last.
Skipped without a CUDA GPU (see conftest.py)."""

from __future__ import annotations

import math

import pytest
import torch

from detflow.model.checkpoint_file import read_checkpoint
from detflow.model.restore import load_checkpoint
from detflow.train.options import TrainOptions

from train_helpers import POSTPROCESS, TINY_MODEL, plan_and_train, tiny_split

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_split(tmp_path_factory.mktemp("tiny"), images=16, size=96)


@pytest.mark.parametrize(
    ("amp", "channels_last"), [("bf16", True), ("fp16", False), ("fp16", True)]
)
def test_amp_trains_on_cuda(data, tmp_path, amp, channels_last):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    options = TrainOptions(
        epochs=2, batch_size=4, warmup_steps=2, device="cuda", amp=amp,
        channels_last=channels_last,
    )  # fmt: skip
    best = plan_and_train(
        model_config=TINY_MODEL,
        postprocess=POSTPROCESS,
        train_json=data / "augmented" / "train.json",
        val_json=data / "split" / "val.json",
        out_dir=tmp_path,
        options=options,
    )
    assert math.isfinite(best["train_loss"]) and best["train_images_per_s"] > 0
    state = read_checkpoint(tmp_path / "last.pt")
    assert all(
        torch.isfinite(v).all() for v in state["model_state"].values() if v.is_floating_point()
    )
    if amp == "fp16":
        assert state["scaler_state"]["scale"] > 0  # the GradScaler's state is kept for resume
    else:
        assert state["scaler_state"] == {}
    model, _ = load_checkpoint(tmp_path / "best.pt", device="cuda")  # loads on CUDA …
    with torch.no_grad():
        out = model([torch.rand(3, 96, 96, device="cuda")])[0]
    assert out["boxes"].device.type == "cuda"
    load_checkpoint(tmp_path / "best.pt")  # … and on CPU


def test_resume_on_cuda_continues_with_the_scaler(data, tmp_path):
    settings = {"batch_size": 4, "warmup_steps": 2, "device": "cuda", "amp": "fp16"}
    common = {
        "model_config": TINY_MODEL,
        "postprocess": POSTPROCESS,
        "train_json": data / "augmented" / "train.json",
        "val_json": data / "split" / "val.json",
        "out_dir": tmp_path,
    }
    plan_and_train(**common, options=TrainOptions(epochs=1, **settings))
    plan_and_train(**common, options=TrainOptions(epochs=2, resume=True, **settings))
    state = read_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2
