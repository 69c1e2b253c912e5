"""A torch ``Dataset`` over a canonical dataset JSON.

Item: ``(image, target)`` with ``image`` a ``[3, H, W]`` float32 tensor in 0..1 and
``target`` = ``{"boxes": [N, 4] float32 xyxy pixels, "labels": [N] int64, "image_id": int}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from detflow import manifest
from detflow.boxes import xywh_to_xyxy
from detflow.images import load_rgb


def image_to_tensor(image) -> torch.Tensor:
    """PIL RGB image or ``[H, W, 3]`` uint8 array → ``[3, H, W]`` float32 tensor in 0..1."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class DetectionDataset(Dataset):
    """Images and boxes of one canonical dataset JSON (e.g. ``data/split/test.json``)."""

    def __init__(self, json_path: str | Path):
        self.json_path = Path(json_path)
        self.dataset = manifest.load_dataset(self.json_path)
        self.image_dir = manifest.image_dir(self.json_path, self.dataset)
        self.class_names = manifest.class_names(self.dataset)
        self.images = self.dataset["images"]
        self._boxes = manifest.annotations_by_image(self.dataset)

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.images[index]["file_name"]

    def target(self, index: int) -> dict:
        image = self.images[index]
        anns = self._boxes.get(image["id"], [])
        boxes = xywh_to_xyxy([a["bbox"] for a in anns]).astype(np.float32)
        return {
            "boxes": torch.from_numpy(boxes).reshape(-1, 4),
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "image_id": image["id"],
        }

    def __getitem__(self, index: int):
        return image_to_tensor(load_rgb(self.image_path(index))), self.target(index)


def collate(batch):
    """Keep images and targets as lists (detection images differ in size)."""
    return tuple(zip(*batch, strict=True))
