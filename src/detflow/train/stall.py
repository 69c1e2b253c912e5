"""Catch a run that is not learning: after each epoch, compare the loss and val mAP50 with
what a learning run shows; on a stall, one warning naming the measured likely causes (from
the data check, :mod:`detflow.train.data_check`) and what to set.

A run has stalled after epoch ``e`` when ``e`` is past the warmup (and at least the second
epoch), no epoch's val mAP50 reached :data:`NEAR_ZERO_MAP50`, and either the mean train loss
fell by less than :data:`FLAT_LOSS` of itself over the last epoch (a learning detector's loss
falls fast in its first epochs; once it flattens, its val mAP50 is well above zero) or the box
regression has collapsed: FCOS's GIoU box loss pinned at 1.0 (:data:`COLLAPSED_GIOU`) means
every predicted box is empty, its ReLU'd regression outputs dead after a too-large step; the
rest of the loss still falls, and the run never recovers (measured: a dense-set seed at
``train.lr=0.02``, docs/benchmarks.md).
"""

from __future__ import annotations

from detflow.train import auto_model
from detflow.train.options import DEFAULT_LR

FLAT_LOSS = 0.05  # a drop under 5 % of the loss over one epoch: flat
NEAR_ZERO_MAP50 = 0.05
LOW_RECALL = auto_model.LOW_RECALL  # best possible recall under this: anchors miss boxes
TINY_LR = 1e-4  # a head learning rate under this hardly moves a detector in a few epochs
MOSTLY_SMALL = 0.5  # more than half the boxes under 32 px at the input size
COLLAPSED_GIOU = 0.999  # FCOS's mean GIoU box loss over an epoch from this: boxes all empty


def stalled(history: list[dict], *, warmup_epochs: int) -> bool:
    """Whether the run of ``history`` (one metrics dict per epoch so far) has stalled."""
    if len(history) < 2 or history[-1]["epoch"] <= warmup_epochs:
        return False
    if max(m["val_map50"] for m in history) >= NEAR_ZERO_MAP50:
        return False
    before, now = history[-2]["train_loss"], history[-1]["train_loss"]
    return before - now < FLAT_LOSS * abs(before) or box_regression_collapsed(history[-1])


def box_regression_collapsed(metrics: dict) -> bool:
    """FCOS's GIoU box loss (``train_bbox_regression``) pinned at 1.0 over an epoch. FCOS is
    told by its centerness loss: SSD's ``bbox_regression`` is a smooth-L1 sum, often > 1."""
    is_fcos = "train_bbox_ctrness" in metrics
    return is_fcos and metrics.get("train_bbox_regression", 0.0) >= COLLAPSED_GIOU


def stall_warning(history: list[dict], *, check: dict, lr: float) -> str:
    """The one warning: what was measured, the likely causes and what to set."""
    before, now = history[-2]["train_loss"], history[-1]["train_loss"]
    best = max(m["val_map50"] for m in history)
    data = check["data"]
    recall, small = check["best_possible_recall"], data["small_box_share"]
    input_px = data["input_size"][1]
    causes = []
    if box_regression_collapsed(history[-1]):
        causes.append(
            f"the box regression has collapsed: its GIoU loss is "
            f"{history[-1]['train_bbox_regression']:.4f} (1.0: every predicted box is empty; "
            f"it does not recover): train again with another train.seed, or a lower train.lr "
            f"(e.g. {lr / 2:g})"
        )
    if lr < TINY_LR:
        causes.append(f"train.lr={lr:g} is tiny: set train.lr (the default is {DEFAULT_LR:g})")
    if recall < LOW_RECALL:
        causes.append(
            f"best possible recall {recall:.2f}: the anchors can match only {recall:.0%} of the "
            "train boxes at IoU 0.5; set model.anchor_sizes and model.anchor_aspect_ratios to "
            "auto (fitted to the boxes) or to values near the box sizes in "
            "reports/train/plan.json"
        )
    if small > MOSTLY_SMALL:
        causes.append(
            f"{small:.0%} of the boxes are under 32 px at the {input_px} px input: set "
            f"model.min_size and model.max_size larger (e.g. {2 * input_px})"
        )
    causes += check["budgets"]["warnings"]
    if not causes:
        causes.append(
            "none of the measured causes stands out: check the labels against the images, "
            "then try train.lr × 0.5 or more train.epochs"
        )
    return (
        f"training is not learning: epoch {history[-1]['epoch']}, train loss "
        f"{before:.4f} → {now:.4f} ({(now - before) / before:+.1%}), best val mAP50 "
        f"{best:.4f}. Measured: best possible recall {recall:.3f}, train.lr {lr:g}, "
        f"{small:.0%} of boxes under 32 px at {input_px} px, densest image "
        f"{check['budgets']['densest_boxes']} boxes. Likely: " + "; ".join(causes)
    )
