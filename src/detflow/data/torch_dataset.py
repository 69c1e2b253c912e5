"""A torch ``Dataset`` over a canonical dataset JSON.

Item: ``(image, target)`` with ``image`` a ``[3, H, W]`` float32 tensor in 0..1 and
``target`` = ``{"boxes": [N, 4] float32 xyxy pixels, "labels": [N] int64, "image_id": int}``.
Boxes marked ignored (VOC difficult, COCO crowd: :func:`detflow.data.manifest.is_ignored`)
are left out of the training targets; evaluation reads them from the dataset itself.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
)

from detflow.core.boxes import xywh_to_xyxy
from detflow.core.images import load_rgb
from detflow.core.seeding import seed_worker
from detflow.data import manifest


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
        anns = [a for a in self._boxes.get(image["id"], []) if not manifest.is_ignored(a)]
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


def aspect_groups(images: list[dict]) -> list[int]:
    """Per image record: 0 if it is at least as wide as it is tall, else 1 (from the JSON)."""
    return [0 if im["width"] >= im["height"] else 1 for im in images]


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` indices from ``sampler``, each from one group (e.g. wide or
    tall images, so a batch pads less); each group's leftover indices form a last, smaller
    batch. Deterministic given the sampler's order."""

    def __init__(self, sampler: Sampler[int], group_ids: list[int], batch_size: int):
        self.sampler, self.group_ids, self.batch_size = sampler, group_ids, batch_size

    def __iter__(self):
        buckets: dict[int, list[int]] = defaultdict(list)
        for index in self.sampler:
            bucket = buckets[self.group_ids[index]]
            bucket.append(index)
            if len(bucket) == self.batch_size:
                yield list(bucket)
                bucket.clear()
        for group in sorted(buckets):
            if buckets[group]:
                yield buckets[group]

    def __len__(self) -> int:
        return grouped_batches(self.group_ids, len(self.sampler), self.batch_size)


def grouped_batches(group_ids: list[int], samples: int, batch_size: int) -> int:
    """Batches :class:`GroupedBatchSampler` yields for ``samples`` indices of ``group_ids``."""
    if samples == len(group_ids):  # every index once (one process)
        counts = Counter(group_ids).values()
        return sum(math.ceil(count / batch_size) for count in counts)
    groups = len(set(group_ids))  # a shard: at most one partial batch per group
    return math.ceil(samples / batch_size) + groups - 1


def batches_per_epoch(
    images: list[dict],
    *,
    batch_size: int,
    aspect_ratio_grouping: bool = False,
    world_size: int = 1,
) -> int:
    """``len(train_loader(...))`` on each rank, from the dataset's ``images`` records alone
    (their ``width``/``height``), without building a loader: what the training plan sizes
    the schedule by."""
    samples = math.ceil(len(images) / world_size)  # DistributedSampler pads to equal shards
    if aspect_ratio_grouping:
        return grouped_batches(aspect_groups(images), samples, batch_size)
    return math.ceil(samples / batch_size)


def train_loader(
    dataset: DetectionDataset,
    *,
    batch_size: int,
    seed: int,
    workers: int = 0,
    aspect_ratio_grouping: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Shuffled training batches, reproducible from ``seed``: one generator (``loader.generator``,
    whose state checkpoints keep) draws the order and the workers' seeds. With
    ``world_size > 1`` each rank gets its shard (``DistributedSampler``; call
    :func:`set_epoch` before each epoch)."""
    generator = torch.Generator().manual_seed(seed)
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, seed=seed)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    if aspect_ratio_grouping:
        batches = GroupedBatchSampler(sampler, aspect_groups(dataset.images), batch_size)
    else:
        batches = BatchSampler(sampler, batch_size, drop_last=False)
    return DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        worker_init_fn=seed_worker,
        generator=generator,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell a distributed sampler which epoch starts (its shuffle depends on it)."""
    sampler = loader.batch_sampler.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
