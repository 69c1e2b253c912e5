"""predict: a real exported detector run by ONNX Runtime on image folders and a generated video;
its detections equal evaluate's (PyTorch) on the same images."""

import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from detflow.core.errors import ConfigError, DataError, DetflowError
from detflow.core.images import load_rgb
from detflow.data import manifest
from detflow.data.torch_dataset import DetectionDataset, image_to_tensor
from detflow.deploy.export import compare_detections, export_verified
from detflow.deploy.predict import default_out_dir, image_input, predict_source
from detflow.deploy.predict_inputs import open_source
from detflow.evaluate.inference import detect_dataset
from detflow.model.build import build_model
from detflow.model.postprocess_config import PostprocessOptions

from export_helpers import POSTPROCESS_DEFAULT, TINY_EXPORT

POSTPROCESS = {
    "default": PostprocessOptions.from_config(POSTPROCESS_DEFAULT),
    "agnostic_soft": PostprocessOptions.from_config(
        {**POSTPROCESS_DEFAULT, "nms": "class_agnostic", "soft_nms": "gaussian"}
    ),
}


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


def _write_images(folder) -> list[str]:
    """Noise images of several sizes and kinds (EXIF-rotated JPEG, grayscale, RGBA, spaces and
    unicode in names): predict must read them exactly as the training stack does."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    noise = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((96, 128), (80, 60))]
    Image.fromarray(noise[0]).save(folder / "a plain.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(noise[1]).save(folder / "rotated é.jpg", exif=exif, quality=95)
    Image.fromarray(noise[0][..., 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([noise[1], noise[1][..., :1]])).save(folder / "rgba.png")
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module", params=sorted(POSTPROCESS))
def exported(request, tmp_path_factory):
    """(model, postprocess, ONNX path, dataset JSON over an image folder) per post-processing;
    the model's own NMS is class-aware, the agnostic/soft variant runs in ``OnnxDetector``."""
    work = tmp_path_factory.mktemp(f"predict-{request.param}")
    postprocess = POSTPROCESS[request.param]
    names = _write_images(work / "images")
    dataset = manifest.new_dataset(class_names=["cat", "dog"])
    images = []
    for name in names:
        image = load_rgb(work / "images" / name)
        images.append(image_to_tensor(image))
        manifest.add_image(
            dataset, file_name=name, width=image.width, height=image.height, source=name, group=name
        )
    manifest.save_dataset(dataset, work / "test.json", image_dir=work / "images")
    model = _model()
    export_verified(
        model=model,
        onnx_path=work / "model.onnx",
        images=images,
        **{**TINY_EXPORT, "names": names},
        postprocess=postprocess,
    )
    return model, postprocess, work / "model.onnx", work / "test.json"


def _records(out_dir) -> list[dict]:
    lines = (out_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_predictions_equal_evaluate_detections(exported, tmp_path):
    model, postprocess, onnx_path, json_path = exported
    test = DetectionDataset(json_path)
    reference, _ = detect_dataset(model, test, postprocess=postprocess)
    out = tmp_path / "out"
    summary = predict_source(
        model=onnx_path, source=json_path.parent / "images", out_dir=out, progress=False
    )
    records = {r["source"].rsplit("/", 1)[-1]: r for r in _records(out)}
    assert summary["images"] == len(test) == len(records) and summary["skipped"] == 0
    total = 0
    for image in test.dataset["images"]:
        record = records[image["file_name"]]
        assert (record["width"], record["height"]) == (image["width"], image["height"])
        dets = record["detections"]
        candidate = {
            "boxes": np.array([d["box"] for d in dets], float).reshape(-1, 4),
            "labels": np.array([d["class_id"] for d in dets], np.int64),
            "scores": np.array([d["score"] for d in dets], float),
        }
        ref = reference[image["id"]]
        assert len(dets) == len(ref["scores"]), image["file_name"]
        result = compare_detections(ref, candidate)
        assert result["unmatched_scores"] == [], image["file_name"]
        # ORT vs PyTorch float32: ~1e-4 px apart; 100x that still catches any input change
        assert result["max_box_error_px"] <= 1e-2 and result["max_score_error"] <= 1e-4
        assert [d["class"] for d in dets] == [["cat", "dog"][d["class_id"] - 1] for d in dets]
        total += len(dets)
    assert total > 0  # an untrained model at threshold 0.05: the comparison is not vacuous
    assert summary["detections"] == total
    annotated = sorted(p.name for p in (out / "images").iterdir())
    assert annotated == sorted(records)
    assert json.loads((out / "summary.json").read_text())["images"] == len(test)


def test_image_input_equals_the_training_tensor():
    image = np.random.default_rng(1).integers(0, 255, (7, 5, 3), dtype=np.uint8)
    assert np.array_equal(image_input(image), image_to_tensor(image).numpy())


def test_a_generated_video_round_trips(exported, tmp_path):
    _, _, onnx_path, _ = exported
    video, frames = tmp_path / "clip.mp4", 7
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (128, 96))
    rng = np.random.default_rng(2)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    summary = predict_source(model=onnx_path, source=video, out_dir=out, progress=False)
    records = _records(out)
    assert summary["images"] == frames and [r["frame"] for r in records] == list(range(frames))
    assert {(r["width"], r["height"]) for r in records} == {(128, 96)}
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    written = 0
    while capture.read()[0]:
        written += 1
    capture.release()
    assert written == frames
    assert default_out_dir(open_source(video)) == Path("predictions/clip")
    limited = predict_source(
        model=onnx_path, source=video, out_dir=tmp_path / "two", max_frames=2, progress=False
    )
    assert limited["images"] == 2


def test_unreadable_images_are_skipped_and_listed(exported, tmp_path):
    _, _, onnx_path, json_path = exported
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "fake.png").write_text("not an image")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (9, 9, 9)).save(buffer, format="PNG")
    (folder / "good.png").write_bytes(buffer.getvalue())
    (folder / "copy.png").write_bytes(buffer.getvalue())
    summary = predict_source(
        model=onnx_path,
        source=folder,
        out_dir=tmp_path / "out",
        max_pixels=64 * 48,
        progress=False,
    )
    assert summary["images"] + summary["skipped"] == 4
    assert default_out_dir(open_source(folder)) == Path("predictions/mixed")
    assert default_out_dir(open_source(str(folder / "*.png"))) == Path("predictions/mixed-glob")
    assert default_out_dir(open_source(folder / "good.png")) == Path("predictions/good")
    reasons = {
        item["source"].rsplit("/", 1)[-1]: item["reason"] for item in summary["skipped_items"]
    }
    assert set(reasons) == {"empty.jpg", "fake.png"}
    assert "zero-byte" in reasons["empty.jpg"]
    small = predict_source(
        model=onnx_path,
        source=str(folder / "*.png"),
        out_dir=tmp_path / "glob",
        max_pixels=100,
        progress=False,
    )
    assert small["images"] == 0 and small["skipped"] == 3
    assert all(
        "pixel limit" in item["reason"] or "cannot" in item["reason"]
        for item in small["skipped_items"]
    )


def test_bad_models_and_sources_fail_with_one_clear_line(exported, tmp_path):
    _, _, onnx_path, json_path = exported
    images = json_path.parent / "images"
    with pytest.raises(DetflowError, match="model not found"):
        predict_source(model=tmp_path / "nope.onnx", source=images, out_dir=tmp_path / "o")
    plain = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "plain",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    onnx.save(plain, tmp_path / "plain.onnx")
    with pytest.raises(DetflowError, match="not a detflow model"):
        predict_source(model=tmp_path / "plain.onnx", source=images, out_dir=tmp_path / "o")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(DetflowError, match="cannot load the model"):
        predict_source(model=tmp_path / "junk.onnx", source=images, out_dir=tmp_path / "o")
    with pytest.raises(ConfigError, match="TensorrtExecutionProvider is not in this"):
        predict_source(model=onnx_path, source=images, out_dir=tmp_path / "o", provider="tensorrt")
    with pytest.raises(DataError, match="no such image, folder, video or glob"):
        open_source(tmp_path / "missing")
    with pytest.raises(DataError, match="no images found"):
        open_source(str(tmp_path / "*.jpg"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("exported", ["default"], indirect=True)  # soft NMS runs in torch
def test_cli_runs_without_torch_and_reports_errors_in_one_line(exported, tmp_path):
    _, _, onnx_path, json_path = exported
    script = (
        "import sys; from detflow.cli import main; code = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)"
    )
    out = tmp_path / "out"
    args = [str(json_path.parent / "images"), "--model", str(onnx_path), "--out", str(out)]
    ok = subprocess.run(
        [sys.executable, "-c", script, "predict", *args, "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "4 images/frames, 0 skipped" in ok.stdout
    assert len(_records(out)) == 4
    bad = subprocess.run(
        [sys.executable, "-c", script, "predict", *args[:1], "--model", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "model not found" in bad.stderr
