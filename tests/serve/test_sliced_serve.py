"""A model trained on tiles, served (issue 37): a real ``detflow serve`` answers a 4000×3000
photo over a socket (sliced: the tiles of the image through the model's batch axis), an
image over ``max_pixels`` gets a 413, and the server stays up."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from detflow.core.tile_settings import TileSettings
from detflow.deploy.export import export_verified
from detflow.deploy.onnx_detector import OnnxDetector
from detflow.deploy.runtime import detect
from detflow.model.build import build_model
from detflow.model.postprocess_config import PostprocessOptions

from export_helpers import POSTPROCESS_DEFAULT, TINY_EXPORT

TILES = TileSettings(416, 32)


@pytest.fixture(scope="module")
def tiled_model(tmp_path_factory):
    """An untrained 2-class Faster R-CNN on the ImageNet trunk at 416 px, exported with
    416 px tiles (32 px overlap)."""
    work = tmp_path_factory.mktemp("sliced-serve")
    torch.manual_seed(0)
    model = build_model(
        name="fasterrcnn_mobilenet_v2",
        num_classes=2,
        backbone_weights="IMAGENET1K_V1",
        min_size=416,
        max_size=416,
        score_threshold=0.0,
        max_detections=100,
        test_proposals=25,
    ).eval()
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.random((3, 500, 700), dtype=np.float32)) for _ in range(2)]
    export_verified(
        model=model,
        onnx_path=work / "model.onnx",
        images=images,
        **TINY_EXPORT,
        postprocess=PostprocessOptions.from_config(POSTPROCESS_DEFAULT),
        tiles=TILES,
    )
    return work / "model.onnx"


def _jpeg(width: int, height: int) -> bytes:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (height // 50, width // 50, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


@pytest.mark.slow
def test_a_tiled_model_serves_a_large_photo_and_refuses_a_bomb(tiled_model, serve, tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("serve:\n  max_pixels: 20000000\n  max_upload_mb: 20\n")
    server = serve(["--model", str(tiled_model), "--config", str(config)])
    data = _jpeg(4000, 3000)
    photo = server.client.post("/v1/detect", content=data, headers={"content-type": "image/jpeg"})
    assert photo.status_code == 200, photo.text
    boxes = np.array([d["box"] for d in photo.json()["detections"]])
    assert 0 < len(boxes) <= 100
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    sliced, _ = detect(OnnxDetector(tiled_model), rgb, 0.0)  # in process: 80 tiles
    whole, _ = detect(OnnxDetector(tiled_model, sliced=False), rgb, 0.0)
    np.testing.assert_allclose(boxes, sliced["boxes"], atol=0.01)  # the server slices
    assert len(whole["boxes"]) != len(boxes) or not np.allclose(whole["boxes"], boxes, atol=1)
    bomb = server.client.post(
        "/v1/detect", content=_jpeg(6000, 5000), headers={"content-type": "image/jpeg"}
    )
    assert bomb.status_code == 413 and bomb.json()["error"] == "too_many_pixels"
    assert server.client.get("/healthz").status_code == 200  # still up
    again = server.client.post(
        "/v1/detect", content=_jpeg(1200, 900), headers={"content-type": "image/jpeg"}
    )
    assert again.status_code == 200
