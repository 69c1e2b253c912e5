"""augment: bbox-safe albumentations pipeline from config, applied to the train split only.

Boxes are ``xyxy`` pixels (albumentations ``pascal_voc``), transformed with the image and
dropped below ``min_visibility`` / ``min_area``. Each augmented copy is seeded from
``(seed, image id, copy)``, so the output does not depend on processing order.
"""

from __future__ import annotations

import io
import shutil
import zlib
from pathlib import Path

import albumentations as A
import numpy as np
from PIL import Image
from tqdm import tqdm

from detflow import manifest
from detflow.boxes import xywh_to_xyxy, xyxy_to_xywh
from detflow.errors import ConfigError, require_positive
from detflow.files import atomic_dir
from detflow.images import load_rgb


def build_pipeline(*, transforms: list[dict], min_visibility: float, min_area: float) -> A.Compose:
    """An albumentations ``Compose`` from ``[{name: Transform, **kwargs}, …]``.

    Raises ConfigError naming the transform and albumentations' own message.
    """
    built = []
    for index, spec in enumerate(transforms):
        spec = dict(spec)
        name = spec.pop("name", None)
        cls = getattr(A, str(name), None)
        if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
            raise ConfigError(
                f"augment.transforms[{index}].name={name!r} is not an "
                "albumentations transform (see albumentations' transform list)"
            )
        try:
            built.append(cls(**spec, strict=True))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"augment.transforms[{index}] {name}: {exc}") from exc
    params = A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        clip=True,
        min_visibility=min_visibility,
        min_area=min_area,
    )
    return A.Compose(built, bbox_params=params, seed=0)


def augment_dataset(
    *,
    train_json: str | Path,
    out_dir: str | Path,
    transforms: list[dict],
    copies: int,
    min_visibility: float,
    min_area: float,
    seed: int,
) -> dict:
    """Write ``out_dir/train.json`` + ``out_dir/images/`` (originals and copies); report."""
    require_positive("augment.copies", copies, allow_zero=True)
    pipeline = build_pipeline(
        transforms=transforms, min_visibility=min_visibility, min_area=min_area
    )
    source = manifest.load_dataset(train_json)
    src_images = manifest.image_dir(train_json, source)
    boxes_of = manifest.annotations_by_image(source)
    out = manifest.new_dataset(class_names=manifest.class_names(source))
    dropped = 0
    with atomic_dir(out_dir) as tmp:
        folder = tmp / "images"
        folder.mkdir()
        for image in tqdm(source["images"], desc="augment", unit="img", leave=False, disable=None):
            anns = boxes_of.get(image["id"], [])
            xyxy = xywh_to_xyxy([a["bbox"] for a in anns])
            labels = [a["category_id"] for a in anns]
            shutil.copyfile(src_images / image["file_name"], folder / image["file_name"])
            _add(out, image, image["file_name"], image["width"], image["height"], xyxy, labels)
            pixels = np.asarray(load_rgb(src_images / image["file_name"])) if copies else None
            for copy in range(1, copies + 1):
                pipeline.set_random_seed(_item_seed(seed, image["file_name"], copy))
                result = pipeline(image=pixels, bboxes=xyxy, labels=labels)
                dropped += len(labels) - len(result["labels"])
                name = f"{Path(image['file_name']).stem}_aug{copy}.png"
                buffer = io.BytesIO()
                Image.fromarray(result["image"]).save(buffer, format="PNG")
                (folder / name).write_bytes(buffer.getvalue())
                height, width = result["image"].shape[:2]
                _add(
                    out,
                    image,
                    name,
                    width,
                    height,
                    result["bboxes"],
                    result["labels"],
                    augmented_from=image["file_name"],
                )
        manifest.save_dataset(out, tmp / "train.json", image_dir=folder)
    return {
        "images_in": len(source["images"]),
        "images_out": len(out["images"]),
        "boxes_in": len(source["annotations"]),
        "boxes_out": len(out["annotations"]),
        "boxes_dropped": dropped,
        "copies": copies,
    }


def _add(out, image, file_name, width, height, xyxy, labels, augmented_from=None):
    new_id = manifest.add_image(
        out,
        file_name=file_name,
        width=width,
        height=height,
        source=image["source"],
        group=image["group"],
        augmented_from=augmented_from,
    )
    for box, label in zip(
        xyxy_to_xywh(np.asarray(xyxy, dtype=float).reshape(-1, 4)), labels, strict=True
    ):
        manifest.add_box(out, image_id=new_id, category_id=int(label), xywh=box)


def _item_seed(seed: int, file_name: str, copy: int) -> int:
    return zlib.crc32(f"{seed}:{file_name}:{copy}".encode())
