"""The shared post-processing: its options, the detector's settings, and hard, class-agnostic
and soft NMS on hand-built boxes."""

import math

import numpy as np
import pytest
import torch

from detflow.core.errors import ConfigError
from detflow.evaluate.inference import detect_images
from detflow.model.build import build_model
from detflow.model.postprocess import CANDIDATES, apply_postprocess, model_kwargs
from detflow.model.postprocess_config import DEFAULTS, PostprocessOptions

from export_helpers import POSTPROCESS_DEFAULT, TINY_EXPORT

BASE = POSTPROCESS_DEFAULT


def _config(**changes) -> PostprocessOptions:
    return PostprocessOptions.from_config({**BASE, **changes})


def _run(boxes, scores, labels, **changes) -> dict:
    return apply_postprocess(
        np.array(boxes, float), np.array(scores, float), np.array(labels), config=_config(**changes)
    )


# A scores 0.9; B overlaps A with IoU 0.6 and scores 0.8; C is apart and scores 0.7.
BOXES = [[0, 0, 10, 10], [0, 0, 10, 6], [50, 50, 60, 60]]
SCORES = [0.9, 0.8, 0.7]


def test_model_kwargs_default_lets_the_detector_do_it_all():
    expected = {"score_threshold": 0.05, "nms_iou": 0.5, "max_detections": 100}
    assert model_kwargs(_config()) == expected
    old_checkpoint = {"score_threshold": 0.1, "nms_iou": 0.6, "max_detections": 50}
    assert model_kwargs(PostprocessOptions.from_config(old_checkpoint)) == {**old_checkpoint}


@pytest.mark.parametrize("change", [{"nms": "class_agnostic"}, {"soft_nms": "gaussian"}])
def test_model_kwargs_hand_the_candidates_on_when_the_final_step_does_nms(change):
    kwargs = model_kwargs(_config(**change))
    assert kwargs == {"score_threshold": 0.05, "nms_iou": 1.0, "max_detections": CANDIDATES}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nms": "per_class"}, r"postprocess.nms='per_class'.*class_aware, class_agnostic"),
        ({"soft_nms": "hard"}, r"postprocess.soft_nms='hard'.*none, gaussian, linear"),
        ({"soft_nms_sigma": 0}, "postprocess.soft_nms_sigma"),
        ({"max_detections": 0}, "postprocess.max_detections"),
        ({"max_detections": 2.5}, "postprocess.max_detections"),
        ({"nms_iou": 1.5}, "postprocess.nms_iou"),
        ({"score_threshold": -0.1}, "postprocess.score_threshold"),
        ({"score_threshold": "low"}, "postprocess.score_threshold='low' must be a number"),
        ({"nms_mode": "x"}, "postprocess.nms_mode is not a postprocess option; allowed: max_"),
    ],
)
def test_bad_config_names_the_key_and_the_choices(change, message):
    with pytest.raises(ConfigError, match=message):
        _config(**change)


def test_stored_dicts_keep_their_keys_values_and_order():
    """Checkpoints store the options as a plain dict, exported models as JSON: the same keys,
    values and order as the config; an older checkpoint's dict takes the newer keys' defaults."""
    assert _config().to_dict() == BASE and list(_config().to_dict()) == list(BASE)
    old = {"score_threshold": 0.1, "nms_iou": 0.6, "max_detections": 50}
    assert PostprocessOptions.from_config(old).to_dict() == {**DEFAULTS, **old}
    assert _config(max_detections=7).to_dict()["max_detections"] == 7
    with pytest.raises(ConfigError, match="^postprocess.nms_iou is required"):
        PostprocessOptions.from_config({"score_threshold": 0.1, "max_detections": 5})


def test_hard_nms_drops_the_overlapping_box_and_keeps_best_first():
    out = _run(BOXES, SCORES, [1, 1, 1])
    np.testing.assert_allclose(out["scores"], [0.9, 0.7])
    np.testing.assert_array_equal(out["boxes"], np.array([BOXES[0], BOXES[2]], np.float32))


def test_class_agnostic_nms_suppresses_across_classes_class_aware_does_not():
    aware = _run(BOXES, SCORES, [1, 2, 1])
    agnostic = _run(BOXES, SCORES, [1, 2, 1], nms="class_agnostic")
    np.testing.assert_array_equal(aware["labels"], [1, 2, 1])
    np.testing.assert_array_equal(agnostic["labels"], [1, 1])
    np.testing.assert_allclose(agnostic["scores"], [0.9, 0.7])


def test_gaussian_soft_nms_decays_by_exp_of_iou_squared_over_sigma():
    out = _run(BOXES, SCORES, [1, 1, 1], soft_nms="gaussian", soft_nms_sigma=0.5)
    decayed = 0.8 * math.exp(-(0.6**2) / 0.5)
    np.testing.assert_allclose(out["scores"], [0.9, 0.7, decayed], rtol=1e-6)
    np.testing.assert_array_equal(out["boxes"][2], BOXES[1])
    # decayed below the score threshold: dropped
    out = _run(BOXES, SCORES, [1, 1, 1], soft_nms="gaussian", score_threshold=0.4)
    np.testing.assert_allclose(out["scores"], [0.9, 0.7])


def test_linear_soft_nms_decays_by_one_minus_iou_above_nms_iou_only():
    out = _run(BOXES, SCORES, [1, 1, 1], soft_nms="linear")
    np.testing.assert_allclose(out["scores"], [0.9, 0.7, 0.8 * 0.4], rtol=1e-6)
    untouched = _run(BOXES, SCORES, [1, 1, 1], soft_nms="linear", nms_iou=0.7)
    np.testing.assert_allclose(untouched["scores"], [0.9, 0.8, 0.7], rtol=1e-6)


def test_soft_nms_decays_in_turn_from_each_kept_box():
    same = [[0, 0, 10, 10]] * 3  # IoU 1: each keep decays the rest by exp(-2)
    out = _run(same, [0.9, 0.8, 0.7], [1, 1, 1], soft_nms="gaussian", score_threshold=0.01)
    k = math.exp(-1 / 0.5)
    np.testing.assert_allclose(out["scores"], [0.9, 0.8 * k, 0.7 * k * k], rtol=1e-6)
    assert len(_run(same, [0.9, 0.8, 0.7], [1, 1, 1], soft_nms="gaussian")["scores"]) == 2


def test_class_aware_soft_nms_leaves_other_classes_alone():
    same = [[0, 0, 10, 10]] * 2
    aware = _run(same, [0.9, 0.8], [1, 2], soft_nms="gaussian")
    agnostic = _run(same, [0.9, 0.8], [1, 2], soft_nms="gaussian", nms="class_agnostic")
    np.testing.assert_allclose(aware["scores"], [0.9, 0.8], rtol=1e-6)
    np.testing.assert_allclose(agnostic["scores"], [0.9, 0.8 * math.exp(-2)], rtol=1e-6)


@pytest.mark.parametrize("soft", ["none", "gaussian"])
def test_score_threshold_and_top_k(soft):
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(5)]  # apart: no suppression
    scores = [0.3, 0.9, 0.02, 0.5, 0.7]
    out = _run(boxes, scores, [1] * 5, soft_nms=soft, max_detections=3)
    np.testing.assert_allclose(out["scores"], [0.9, 0.7, 0.5])
    assert len(_run(boxes, scores, [1] * 5, soft_nms=soft)["scores"]) == 4  # 0.02 < 0.05


def test_types_kept_inputs_untouched_and_empty_input():
    boxes, scores = torch.tensor(BOXES, dtype=torch.float32), torch.tensor(SCORES)
    labels = torch.tensor([1, 1, 1])
    out = apply_postprocess(boxes, scores, labels, config=_config(soft_nms="gaussian"))
    assert all(isinstance(v, torch.Tensor) for v in out.values())
    assert scores.tolist() == pytest.approx(SCORES)
    empty = _run(np.zeros((0, 4)), [], np.zeros(0, int), soft_nms="linear")
    assert empty["boxes"].shape == (0, 4) and isinstance(empty["scores"], np.ndarray)


def test_default_config_changes_nothing_on_the_detectors_output():
    """Default: the detector already did it all, so the shared step is the identity."""
    torch.manual_seed(0)
    config = _config(score_threshold=0.0, max_detections=20)
    model = build_model(
        name="fasterrcnn_mobilenet_v2",
        num_classes=2,
        min_size=96,
        max_size=96,
        **model_kwargs(config),
    )
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0))
    raw = detect_images(model, [image])[0]
    post = detect_images(model, [image], postprocess=config)[0]
    assert len(raw["scores"]) > 0
    for key in raw:
        torch.testing.assert_close(post[key], raw[key].to(post[key].dtype))


def test_export_parity_compares_after_the_same_postprocess(tmp_path):
    from detflow.deploy.export import export_verified

    config = _config(
        score_threshold=0.0, nms="class_agnostic", soft_nms="gaussian", max_detections=5
    )
    torch.manual_seed(0)
    model = build_model(
        name="fasterrcnn_mobilenet_v2",
        num_classes=2,
        min_size=96,
        max_size=96,
        **model_kwargs(config),
    )
    generator = torch.Generator().manual_seed(0)
    images = [
        torch.rand(3, 96, 128, generator=generator),
        torch.rand(3, 60, 200, generator=generator),
    ]
    report = export_verified(
        model=model,
        onnx_path=tmp_path / "model.onnx",
        images=images,
        **TINY_EXPORT,
        postprocess=config,
    )
    assert report["passed"] and report["detections"] == 2 * 5  # top 5 after soft-NMS, each


def test_params_hold_a_valid_postprocess_and_the_evaluate_keys():
    import yaml

    from conftest import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    options = PostprocessOptions.from_config(params["postprocess"])
    assert list(options.to_dict().items()) == list(params["postprocess"].items())
    assert set(params["evaluate"]) == {
        "score_threshold",
        "iou",
        "preview_images",
        "preview_columns",
        "bootstrap",
        "bootstrap_seed",
        "issue_grid",
        "issue_confidence",
    }


def test_background_label_zero_is_dropped():
    out = _run([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 1])
    assert out["labels"].tolist() == [1] and out["scores"].tolist() == pytest.approx([0.8])
