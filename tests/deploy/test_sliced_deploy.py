"""Sliced inference in the deploy path: a model exported with tiles carries them
(``detflow_tiles``, model card), its ONNX Runtime and OpenVINO detectors slice in
``__call__`` (tiles through ``detect_batch``, no torch) and match PyTorch sliced, the parity
gate checks it end to end, and ``detflow predict`` runs it; a model without tiles is as
before."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from detflow.core.errors import DetflowError
from detflow.core.tile_settings import TileSettings
from detflow.deploy.export import check_parity, compare_detections, export_verified
from detflow.deploy.onnx_detector import OnnxDetector, input_to_rgb, rgb_to_input
from detflow.deploy.predict import predict_source
from detflow.deploy.publish import deploy
from detflow.deploy.runtime import detect, detect_batch
from detflow.evaluate.inference import sliced_predictor
from detflow.model.build import build_model
from detflow.model.postprocess_config import PostprocessOptions

from export_helpers import POSTPROCESS_DEFAULT, TINY_EXPORT

POSTPROCESS = PostprocessOptions.from_config(POSTPROCESS_DEFAULT)
TILES = TileSettings(96, 16, merge="wbf", with_full_image=True)
# ORT vs PyTorch float32 is ~1e-4 px apart on this model (test_predict.py); the merge adds
# no error of its own unless a score tie flips a cluster, which these images do not have
BOX_PX, SCORE = 1e-2, 1e-4


def _model():
    torch.manual_seed(0)
    return build_model(
        name="fasterrcnn_mobilenet_v2",
        num_classes=2,
        backbone_weights="IMAGENET1K_V1",  # real features: outputs follow the pixels
        min_size=96,
        max_size=96,
        score_threshold=0.0,
        max_detections=100,
    ).eval()


def _images() -> list[torch.Tensor]:
    """Full images larger than a tile (6 and 4 tiles) and one smaller (one padded tile)."""
    rng = np.random.default_rng(0)
    sizes = ((150, 200), (170, 120), (60, 80))
    arrays = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    return [torch.from_numpy(a).permute(2, 0, 1).float().div(255) for a in arrays]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, ONNX path with tiles, parity report)."""
    work = tmp_path_factory.mktemp("sliced")
    model = _model()
    report = export_verified(
        model=model,
        onnx_path=work / "model.onnx",
        images=_images(),
        **{**TINY_EXPORT, "names": ["a", "b", "c"]},
        postprocess=POSTPROCESS,
        tiles=TILES,
    )
    return model, work / "model.onnx", report


def test_tiles_travel_in_the_metadata_and_the_gate_checks_sliced(exported):
    _, path, report = exported
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert TileSettings.from_dict(json.loads(meta["detflow_tiles"])) == TILES
    assert OnnxDetector(path).tiles == TILES
    assert OnnxDetector(path, sliced=False).tiles is None
    sliced = report["sliced"]
    assert report["passed"] and sliced["images"] == 3 and sliced["tiles"] == 6 + 4 + 1
    assert sliced["detections"] > 0  # not vacuous
    assert sliced["max_box_error_px"] <= 1.0 and sliced["max_score_error"] <= 1e-3


def test_onnx_sliced_equals_torch_sliced(exported):
    model, path, _ = exported
    detector = OnnxDetector(path)
    reference_of = sliced_predictor(model, tiles=TILES, postprocess=POSTPROCESS)
    total = 0
    for image in _images():
        reference = reference_of(image)
        candidate = detector(image.numpy())
        assert len(candidate["scores"]) == len(reference["scores"])
        result = compare_detections(reference, candidate)
        assert result["unmatched_scores"] == []
        assert result["max_box_error_px"] <= BOX_PX and result["max_score_error"] <= SCORE
        total += len(reference["scores"])
    assert total > 0
    # the whole graph on a full image gives other boxes: slicing is what ran
    whole = OnnxDetector(path, sliced=False)(_images()[0].numpy())
    assert compare_detections(whole, detector(_images()[0].numpy()))["unmatched_scores"]


def test_tiles_of_one_image_go_through_detect_batch_in_chunks(exported, monkeypatch):
    _, path, _ = exported
    detector = OnnxDetector(path)
    seen = []
    real = detector.detect_batch
    monkeypatch.setattr(
        detector, "detect_batch", lambda images: seen.append(images) or real(images)
    )
    monkeypatch.setattr("detflow.deploy.onnx_detector.TILE_BATCH", 4)
    detector(_images()[0].numpy())  # 6 tiles + the whole image downscaled
    assert [len(batch) for batch in seen] == [4, 2, 1]
    assert all(b.shape == (3, 96, 96) for b in seen[0])
    assert detector.last_tiles == 6


def test_unreadable_tiles_name_the_file(exported, tmp_path):
    proto = onnx.load(str(exported[1]))
    onnx.helper.set_model_props(
        proto,
        {p.key: p.value for p in proto.metadata_props} | {"detflow_tiles": '{"size": 96}'},
    )
    path = tmp_path / "bad.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(
        DetflowError, match=r"bad.onnx: detflow_tiles cannot be read \(tiles.overlap is required"
    ):
        OnnxDetector(path)


def test_the_gate_refuses_tiles_other_than_the_files(exported):
    model, path, _ = exported
    with pytest.raises(DetflowError, match="detflow_tiles .* differ"):
        check_parity(
            model=model,
            onnx_path=path,
            images=_images()[:1],
            names=["a"],
            options=TINY_EXPORT["options"],
            score_threshold=POSTPROCESS.score_threshold,
            postprocess=POSTPROCESS,
            tiles=TileSettings(96, 32),
        )


def test_runtime_and_predict_slice_rgb_images(exported, tmp_path):
    model, path, _ = exported
    detector = OnnxDetector(path)
    images = _images()
    rgb = [input_to_rgb(image.numpy()) for image in images]
    assert np.array_equal(rgb_to_input(rgb[0]), images[0].numpy())
    one, _ = detect(detector, rgb[1], 0.0)
    many, _ = detect_batch(detector, rgb, [0.0] * 3)
    for key in ("boxes", "scores", "labels"):
        np.testing.assert_array_equal(many[1][key], one[key])
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rgb[0]).save(folder / "big.png")
    summary = predict_source(model=path, source=folder, out_dir=tmp_path / "out", progress=False)
    record = json.loads((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()[0])
    assert summary["images"] == 1 and (record["width"], record["height"]) == (200, 150)
    reference = sliced_predictor(model, tiles=TILES, postprocess=POSTPROCESS)(images[0])
    keep = reference["scores"] >= POSTPROCESS.score_threshold
    assert len(record["detections"]) == int(keep.sum()) > 0


def test_model_card_states_the_tiles(exported, tmp_path):
    from detflow.deploy.variants import build_ort_fp32

    _, path, _ = exported
    build_ort_fp32(path, tmp_path / "ort_fp32.onnx")  # optimize's variants keep the metadata
    assert OnnxDetector(tmp_path / "ort_fp32.onnx").tiles == TILES
    card = deploy(variant="ort_fp32", model_path=path, row={}, out_dir=tmp_path / "d", commit=None)
    assert card["tiles"] == TILES.to_dict()


def test_a_model_without_tiles_detects_as_before(exported, tmp_path):
    proto = onnx.load(str(exported[1]))  # the same graph, its tiles taken out
    kept = [p for p in proto.metadata_props if p.key != "detflow_tiles"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    path = tmp_path / "plain.onnx"
    onnx.save(proto, str(path))
    images = _images()
    detector = OnnxDetector(path)
    assert detector.tiles is None
    array = images[0].numpy()
    boxes, labels, scores = detector.session.run(["boxes", "labels", "scores"], {"image": array})
    out = detector(array)
    keep = labels > 0
    np.testing.assert_array_equal(out["boxes"], boxes[keep])
    np.testing.assert_array_equal(out["scores"], scores[keep])
    card = deploy(variant="ort_fp32", model_path=path, row={}, out_dir=tmp_path / "d", commit=None)
    assert card["tiles"] is None


@pytest.mark.slow  # converting to OpenVINO IR takes ~30 s here
def test_openvino_detector_slices_as_onnx_runtime(exported, tmp_path):
    pytest.importorskip("openvino")
    from detflow.deploy.openvino_build import build_openvino
    from detflow.deploy.openvino_detector import OpenVinoDetector

    _, path, _ = exported
    target = tmp_path / "model.xml"
    build_openvino(path, target, precision="f32")
    detector, onnx_detector = OpenVinoDetector(target), OnnxDetector(path)
    assert detector.tiles == TILES
    image = _images()[0].numpy()
    result = compare_detections(onnx_detector(image), detector(image))
    assert result["unmatched_scores"] == [] and result["max_box_error_px"] <= 0.05
    assert detector.last_tiles == 6


def test_the_sliced_detector_imports_no_torch(exported):
    _, path, _ = exported
    code = (
        "import sys, numpy as np\n"
        "from detflow.deploy.runtime import detect, open_model\n"
        f"detector = open_model({str(path)!r})\n"
        "out, _ = detect(detector, np.zeros((300, 250, 3), np.uint8), 0.0)\n"
        "assert detector.last_tiles == 12, detector.last_tiles\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
