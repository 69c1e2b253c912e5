"""ONNX export and its parity gate, with real torchvision models and real ONNX Runtime."""

import json

import numpy as np
import onnx
import pytest
import torch

from detflow.core.errors import ConfigError, DetflowError
from detflow.deploy.export import (
    ExportOptions,
    check_parity,
    compare_detections,
    export_onnx,
    export_verified,
)
from detflow.deploy.onnx_detector import OnnxDetector
from detflow.model.build import build_model

from export_helpers import TINY_EXPORT


def _model(seed: int, name: str = "fasterrcnn_mobilenet_v2"):
    torch.manual_seed(seed)
    return build_model(
        name=name,
        num_classes=2,
        backbone_weights="none",
        min_size=96,
        max_size=96,
        score_threshold=0.0,
        max_detections=20,
    ).eval()


def _images():
    generator = torch.Generator().manual_seed(0)
    # different sizes: the exported graph's input height and width are dynamic
    return [
        torch.rand(3, 96, 128, generator=generator),
        torch.rand(3, 60, 200, generator=generator),
    ]


def test_compare_detections_matches_by_label_and_box():
    ref = {
        "boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float),
        "labels": np.array([1, 2]),
        "scores": np.array([0.9, 0.8]),
    }
    same = {k: v[::-1].copy() for k, v in ref.items()}
    same["boxes"][0] += 0.5
    result = compare_detections(ref, same)
    assert result["max_box_error_px"] == pytest.approx(0.5)
    assert result["unmatched_scores"] == []
    other = dict(ref, labels=np.array([1, 1]))
    assert compare_detections(ref, other)["unmatched_scores"] == [0.8, 0.8]


def test_export_has_metadata_and_parity_gate_catches_a_different_model(tmp_path):
    model, images = _model(0), _images()
    path = tmp_path / "model.onnx"
    report = export_verified(
        model=model,
        onnx_path=path,
        images=images,
        **{**TINY_EXPORT, "config": {"k": 1}},
    )
    assert report["passed"] and path.exists()
    assert report["batch"] == len(images) > 1  # the batched graph is gated too
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["detflow_class_names"] == '["cat", "dog"]'
    assert len(meta["detflow_config_sha256"]) == 64
    assert OnnxDetector(path).class_names == ["cat", "dog"]
    with pytest.raises(DetflowError, match="ONNX parity failed on a"):
        check_parity(
            model=_model(1),
            onnx_path=path,
            images=images,
            names=["a", "b"],
            options=ExportOptions(max_box_error_px=1.0, max_score_error=1e-3),
            score_threshold=0.0,
        )


def test_export_options_name_the_key_at_fault():
    assert ExportOptions.from_config({}) == ExportOptions()  # the defaults: conf/config.yaml
    for config, message in (
        ({"opset": 9}, "export.opset=9 must be an ONNX opset >= 11"),
        ({"parity_images": "all"}, "export.parity_images='all' must be an integer"),
        ({"parity_images": 0}, "export.parity_images=0 must be an integer > 0"),
        ({"max_box_error_px": -1}, "export.max_box_error_px=-1 must be a number >= 0"),
        ({"max_score": 0.1}, "export.max_score is not a export option; allowed: max_box_error"),
    ):
        with pytest.raises(ConfigError, match=message):
            ExportOptions.from_config(config)


def test_failed_parity_leaves_no_model_file(tmp_path, monkeypatch):
    import detflow.deploy.export as export

    def broken_export(**kwargs):
        export_onnx(**{**kwargs, "model": _model(1)})

    monkeypatch.setattr(export, "export_onnx", broken_export)
    with pytest.raises(DetflowError, match="parity failed"):
        export.export_verified(
            model=_model(0),
            onnx_path=tmp_path / "m.onnx",
            images=_images(),
            **TINY_EXPORT,
        )
    assert list(tmp_path.iterdir()) == []


def test_runtime_refuses_a_model_without_detflow_metadata(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), str(path), dynamo=False)
    with pytest.raises(DetflowError, match="not a detflow model"):
        OnnxDetector(path)
    with pytest.raises(DetflowError, match="model not found"):
        OnnxDetector(tmp_path / "missing.onnx")


def test_metadata_carries_the_postprocess_config_and_the_runtime_applies_it(tmp_path):
    """Class-agnostic soft-NMS: the graph hands on candidates; OnnxDetector applies the
    exported config, so its output is the parity-checked one."""
    from detflow.model.postprocess import apply_postprocess, model_kwargs
    from detflow.model.postprocess_config import PostprocessOptions

    config = {
        "score_threshold": 0.01,
        "nms": "class_agnostic",
        "nms_iou": 0.5,
        "soft_nms": "gaussian",
        "soft_nms_sigma": 0.3,
        "max_detections": 10,
    }
    postprocess = PostprocessOptions.from_config(config)
    torch.manual_seed(0)
    model = build_model(
        name="fasterrcnn_mobilenet_v2",
        num_classes=2,
        backbone_weights="none",
        min_size=96,
        max_size=96,
        **model_kwargs(postprocess),
    ).eval()
    path = tmp_path / "model.onnx"
    report = export_verified(
        model=model,
        onnx_path=path,
        images=_images(),
        **TINY_EXPORT,
        postprocess=postprocess,
    )
    assert report["passed"]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["detflow_postprocess"] == json.dumps(config, sort_keys=True)  # as before
    assert OnnxDetector(path).postprocess == postprocess
    for key in ("detflow_input", "detflow_normalize", "detflow_score_threshold"):
        assert key in meta, key
    image = _images()[1].numpy()
    applied = OnnxDetector(path)(image)
    raw = OnnxDetector(path, postprocess=False)(image)
    assert len(raw["scores"]) > len(applied["scores"]) <= 10
    expected = apply_postprocess(raw["boxes"], raw["scores"], raw["labels"], config=postprocess)
    for key in ("boxes", "labels"):  # the runtime's NumPy step equals PyTorch's
        np.testing.assert_array_equal(applied[key], expected[key])
    # decayed scores: NumPy's and torch's float32 exp may differ in the last bit
    np.testing.assert_allclose(applied["scores"], expected["scores"], rtol=1e-6, atol=0)


def test_onnxslim_simplification_keeps_parity_and_metadata(tmp_path):
    path = tmp_path / "model.onnx"
    options = {
        "model": _model(0),
        "images": _images(),
        **TINY_EXPORT,
    }
    plain = export_verified(onnx_path=tmp_path / "plain.onnx", **options)
    slim = {**options, "options": ExportOptions(simplify="onnxslim")}
    report = export_verified(onnx_path=path, **slim)
    assert report["passed"] and report["simplify"] == "onnxslim"
    assert report["nodes"] < plain["nodes"]
    assert OnnxDetector(path).class_names == ["cat", "dog"]
    with pytest.raises(DetflowError, match="export.simplify='onnxsim'.*none, onnxslim"):
        ExportOptions.from_config({"simplify": "onnxsim"})


@pytest.mark.parametrize("name", ["fcos_mobilenet_v2", "ssdlite_mobilenet_v2"])
def test_a_one_stage_detector_exports_with_its_output_order(tmp_path, name):
    """FCOS, RetinaNet and SSD return boxes, scores, labels (Faster R-CNN: boxes, labels,
    scores): the graph's outputs are named from the model's own order and read by name, so the
    labels are class ids (never the background, 0) and parity holds. SSDlite starts on the
    ImageNet trunk with a random classifier: untrained from scratch, all its scores tie at 1/3
    and the order of tied boxes is the runtime's own."""
    if name.startswith("ssdlite"):
        torch.manual_seed(0)
        model = build_model(name=name, num_classes=2, backbone_weights="IMAGENET1K_V1",
                            min_size=96, max_size=96, max_detections=20).eval()  # fmt: skip
        with torch.no_grad():
            for block in model.head.classification_head.module_list:
                block[-1].weight.normal_(0, 0.5)
    else:
        model = _model(0, name)
    path = tmp_path / "model.onnx"
    report = export_verified(model=model, onnx_path=path, images=_images(), **TINY_EXPORT)
    assert report["passed"]
    output = OnnxDetector(path)(_images()[0].numpy())
    assert len(output["labels"]) > 0 and set(output["labels"].tolist()) <= {1, 2}
    assert output["labels"].dtype == np.int64 and output["scores"].dtype == np.float32
