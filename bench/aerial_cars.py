"""Lay out the public aerial-cars dataset as a YOLO folder detflow reads, for bench/tiles.py.

The dataset: https://github.com/jekhor/aerial-cars-dataset (Yauhen Kharuzhy): aerial and drone
photos, 684×547 to 4000×2250 px, YOLO labels (``aerial.names``: car, truck, bus, minibus,
cyclist). Its README gives the images' sources and licences: the KIT AIS data set (CC BY 3.0),
frames of a YouTube video (YouTube's standard licence: "use with caution") and the author's and
Minsk OpenStreetMap community's photos (CC BY-SA). It is used here for measurement only, never
committed (docs/tiles.md). Clone it yourself (``git clone
https://github.com/jekhor/aerial-cars-dataset``); images whose file is missing from a partial
copy are skipped with their labels, and the list files (``train*.txt``, ``test*.txt``,
``full*.txt``) are left out.

``--every N`` keeps every N-th image of the sorted names (the first, the (N+1)-th, …): a
smaller set that still holds every source (the session-11 figures used ``--every 7``: 21
images).

Usage: python bench/aerial_cars.py SOURCE_DIR OUT_DIR [--every N]
       # then: data=yolo data.path=OUT_DIR
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def lay_out(source: Path, out: Path, *, every: int = 1) -> dict:
    """``out/images``, ``out/labels`` and ``out/aerial.names`` from the flat ``source``
    (every ``every``-th image by sorted name); returns the counts ``{"images", "labels",
    "skipped_labels"}``."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "aerial.names", out / "aerial.names")
    found = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images = {p.stem: p for p in found[::every]}
    labels = skipped = 0
    for stem, image in sorted(images.items()):
        shutil.copy2(image, out / "images" / image.name)
        label = source / f"{stem}.txt"
        if label.is_file():
            shutil.copy2(label, out / "labels" / label.name)
            labels += 1
    for label in source.glob("*.txt"):
        skipped += label.stem not in {p.stem for p in found}
    return {"images": len(images), "labels": labels, "skipped_labels": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--every", type=int, default=1, help="keep every N-th image")
    args = parser.parse_args()
    print(lay_out(args.source, args.out, every=args.every))


if __name__ == "__main__":
    main()
