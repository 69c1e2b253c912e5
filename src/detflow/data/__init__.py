"""data: the canonical dataset and the data stages.

manifest (the canonical dataset JSON), formats/ (YOLO, COCO, VOC, CSV, video and archive
readers), convert (writers: ``detflow convert``), collect, clean (with quality flags and
near_duplicates), split, augment, tiles and tile_dataset (tiles cut from large images), and
torch_dataset (the PyTorch Dataset the model phases read). Each stage's options live beside
its function: ``CollectOptions``, ``CleanPolicy``, ``SplitOptions``, ``AugmentOptions``.
Imports core only.
"""
