"""Sliced evaluate (detflow.evaluate.inference with ``tiles``): a full image tile by tile, the
tiles of one image as one model batch, COCO metrics on the full images and their original
boxes; the same detections as whole-image inference when the image is one tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detflow.core.tile_settings import TileSettings
from detflow.data import manifest
from detflow.data.torch_dataset import DetectionDataset
from detflow.evaluate.inference import detect_dataset, evaluate_model, rgb_to_tensor, tensor_to_rgb
from detflow.model.build import build_model
from detflow.model.postprocess_config import PostprocessOptions

from export_helpers import POSTPROCESS_DEFAULT

POSTPROCESS = PostprocessOptions.from_config(POSTPROCESS_DEFAULT)


class WhiteBoxModel(torch.nn.Module):
    """A stand-in torchvision-style detector with known answers: per ``[3, H, W]`` image, the
    bounding box (xyxy px) of its white pixels as one class-1 detection, scored by their
    count (a cut object scores lower). Records the sizes of the batches it was given."""

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        self.batches.append(len(images))
        return [self._detect(image) for image in images]

    @staticmethod
    def _detect(image: torch.Tensor) -> dict:
        ys, xs = torch.nonzero((image == 1).all(dim=0), as_tuple=True)
        if not len(xs):
            return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                    "scores": torch.zeros(0)}  # fmt: skip
        box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
        return {
            "boxes": torch.tensor(box, dtype=torch.float32),
            "labels": torch.tensor([1]),
            "scores": torch.tensor([min(1.0, len(xs) / 1600)]),
        }


def _dataset(tmp_path, images: list[np.ndarray], boxes: list[list]) -> DetectionDataset:
    """A canonical dataset of ``images`` (``[H, W, 3]`` uint8) with COCO ``xywh`` ``boxes``."""
    folder = tmp_path / "images"
    folder.mkdir(parents=True)
    dataset = manifest.new_dataset(class_names=["cat", "dog"])
    for i, (image, image_boxes) in enumerate(zip(images, boxes, strict=True)):
        name = f"{i}.png"
        Image.fromarray(image).save(folder / name)
        height, width = image.shape[:2]
        image_id = manifest.add_image(
            dataset, file_name=name, width=width, height=height, source=name, group=name
        )
        for xywh in image_boxes:
            manifest.add_box(dataset, image_id=image_id, category_id=1, xywh=xywh)
    manifest.save_dataset(dataset, tmp_path / "test.json", image_dir=folder)
    return DetectionDataset(tmp_path / "test.json")


def _real_model():
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


def _noise(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_tensor_and_rgb_round_trip_exactly():
    rgb = _noise(7, 5)
    assert np.array_equal(tensor_to_rgb(rgb_to_tensor(rgb)), rgb)
    assert rgb_to_tensor(rgb).shape == (3, 7, 5)


def test_sliced_metrics_on_full_images_with_original_boxes(tmp_path):
    # 300 x 200 at 96 px tiles, overlap 48: an object cut by seams, one away from them
    image = np.zeros((200, 300, 3), np.uint8)
    image[40:80, 60:100] = 255  # xyxy (60, 40, 100, 80): 40 px, whole in some tile
    other = np.zeros((200, 300, 3), np.uint8)
    other[150:190, 250:290] = 255
    dataset = _dataset(tmp_path, [image, other], [[[60, 40, 40, 40]], [[250, 150, 40, 40]]])
    model = WhiteBoxModel()
    tiles = TileSettings(96, 48)
    predictions, _ = detect_dataset(model, dataset, tiles=tiles)
    assert [len(p["scores"]) for p in predictions.values()] == [1, 1]  # one box per object
    np.testing.assert_allclose(predictions[1]["boxes"], [[60, 40, 100, 80]])
    np.testing.assert_allclose(predictions[2]["boxes"], [[250, 150, 290, 190]])
    assert model.batches[:2] == [16, 8]  # 6 x 4 tiles of one image, in chunks of 16
    sliced = evaluate_model(model, dataset, tiles=tiles)
    assert sliced["map50"] == pytest.approx(1.0) and sliced["map50_95"] == pytest.approx(1.0)
    whole = evaluate_model(WhiteBoxModel(), dataset)  # the stand-in is exact on whole images too
    assert whole["map50"] == pytest.approx(1.0)


@pytest.mark.parametrize("merge", ["nms", "wbf"])
def test_one_tile_image_gives_what_whole_image_inference_gives(tmp_path, merge):
    """An image of exactly one tile: the sliced detections and metrics equal the unsliced."""
    dataset = _dataset(tmp_path, [_noise(96, 96)], [[[10, 20, 30, 30]]])
    model = _real_model()
    whole, _ = detect_dataset(model, dataset, postprocess=POSTPROCESS)
    tiles = TileSettings(96, 16, merge=merge)
    sliced, _ = detect_dataset(model, dataset, postprocess=POSTPROCESS, tiles=tiles)
    assert len(whole[1]["scores"]) > 0  # not vacuous
    order = np.argsort(-whole[1]["scores"], kind="stable")
    for key in ("boxes", "labels", "scores"):
        np.testing.assert_allclose(sliced[1][key], whole[1][key][order], rtol=0, atol=1e-5)
    assert evaluate_model(model, dataset, postprocess=POSTPROCESS, tiles=tiles) | {
        "latency_ms_p50": 0, "latency_ms_p95": 0
    } == evaluate_model(model, dataset, postprocess=POSTPROCESS) | {
        "latency_ms_p50": 0, "latency_ms_p95": 0
    }  # fmt: skip


def test_image_smaller_than_a_tile_is_one_padded_tile(tmp_path):
    """A 60 x 80 image at 96 px tiles: the model sees it padded with black to 96 x 96 (the
    scale it was trained at), and the boxes are clipped to the image."""
    small = _noise(60, 80, seed=1)
    dataset = _dataset(tmp_path, [small], [[[10, 10, 20, 20]]])
    model = _real_model()
    sliced, _ = detect_dataset(
        model, dataset, postprocess=POSTPROCESS, tiles=TileSettings(96, 16, iou=1.0)
    )
    padded = np.zeros((96, 96, 3), np.uint8)
    padded[:60, :80] = small
    reference, _ = detect_dataset(
        model, _dataset(tmp_path / "p", [padded], [[]]), postprocess=POSTPROCESS
    )
    boxes = np.clip(reference[1]["boxes"], 0, [80, 60, 80, 60])
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    assert keep.sum() > 0
    order = np.argsort(-reference[1]["scores"][keep], kind="stable")
    np.testing.assert_allclose(sliced[1]["boxes"], boxes[keep][order], atol=1e-4)
    np.testing.assert_allclose(sliced[1]["scores"], reference[1]["scores"][keep][order], atol=1e-6)
