"""The corpus runner: the case registry (:func:`case`, :data:`CASES`), the inputs it generates
and the stage runners that feed them to the library and account for every unit.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from detflow.core.errors import DetflowError
from detflow.data import manifest
from detflow.data.clean import CleanPolicy, clean_dataset
from detflow.data.collect import CollectOptions, collect_dataset

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"
DEFAULTS = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
NAMES = ["cat", "dog"]
GOOD_LINE = "0 0.5 0.5 0.25 0.5"  # YOLO cxcywh_norm: a valid cat box


@dataclass
class Result:
    """What a case did: its outcome and ``{unit: (input, kept, dropped)}``."""

    outcome: str
    ledger: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class Case:
    id: str
    stage: str
    given: str
    expected: str
    run: Callable[[Path], Result]


def registry() -> tuple[list[Case], Callable]:
    """A spec module's case list and its decorator: ``@case(id, stage, given, expected)``
    registers the decorated ``run(tmp_path) -> Result`` as a corpus case, in order."""
    cases: list[Case] = []

    def case(case_id: str, stage: str, given: str, expected: str):
        def register(run):
            cases.append(Case(case_id, stage, given, expected, run))
            return run

        return register

    return cases, case


# --- generated inputs -------------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def noise(seed: int, size=(64, 48), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    return image if mode == "RGB" else image.convert(mode)


def exif_rotated_jpeg() -> bytes:
    """Stored 64×48 with EXIF orientation 6: displayed 48×64 (rotated 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(noise(7), "JPEG", exif=exif.tobytes(), quality=95)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


# --- stage runners ----------------------------------------------------------------------


def _error(exc: DetflowError) -> Result:
    return Result(f"error: {exc}", message=str(exc))


def collect(source: dict, out: Path, *, images: int, boxes: int, item: str, **kw) -> Result:
    """Run collect; the outcome is the first drop whose path contains ``item`` (else kept)."""
    try:
        report = collect_dataset(options=CollectOptions.from_config(source, **kw), out_dir=out)
    except DetflowError as exc:
        return _error(exc)
    drops = [d for d in report["dropped"] if item in d["path"]]
    dropped = {kind: sum(d["item"] == kind for d in report["dropped"]) for kind in ("image", "box")}
    members = sum(d["item"] == "member" for d in report["dropped"])
    return Result(
        f"dropped: {drops[0]['reason']}" if drops else "kept",
        {
            "images": (images, report["images"], dropped["image"] + members),
            "boxes": (boxes, report["boxes"], dropped["box"]),
        },
    )


def clean(raw_json: Path, out: Path, source: str, **policy) -> Result:
    """Run clean (near-duplicate search off unless asked); the outcome for image ``source``."""
    policy = {"near_duplicate_distance": None, **policy}
    try:
        report = clean_dataset(in_json=raw_json, out_dir=out, policy=CleanPolicy(**policy))
    except DetflowError as exc:
        return _error(exc)
    cleaned = manifest.load_dataset(out / "dataset.json")
    for image in cleaned["images"]:  # every kept image is 8-bit RGB of its recorded size
        with Image.open(out / "images" / image["file_name"]) as opened:
            assert opened.mode == "RGB" and opened.size == (image["width"], image["height"])
    drops = [d for d in report["dropped"] if d["source"] == source]
    changes = next((im.get("changes") for im in cleaned["images"] if im["source"] == source), 0)
    if drops:
        outcome = f"dropped: {drops[0]['reason']}"
    elif changes:
        outcome = f"changed: {changes[0]}"
    elif report["boxes_clipped"]:
        outcome = "changed: clipped"
    else:
        outcome = "kept"
    return Result(
        outcome,
        {
            "images": (report["images_in"], report["images_kept"], report["images_dropped"]),
            "boxes": (report["boxes_in"], report["boxes_kept"], report["boxes_dropped"]),
        },
    )


def collect_then_clean(source: dict, tmp: Path, *, images: int, boxes: int, item: str) -> Result:
    """The case's outcome after collect and clean; both stages' ledgers are checked."""
    first = collect(source, tmp / "raw", images=images, boxes=boxes, item=item)
    if first.outcome != "kept":
        return first
    raw = manifest.load_dataset(tmp / "raw" / "dataset.json")
    name = next(im["source"] for im in raw["images"] if item in im["source"])
    second = clean(tmp / "raw" / "dataset.json", tmp / "clean", name)
    ledger = {f"collect {k}": v for k, v in first.ledger.items()}
    ledger.update({f"clean {k}": v for k, v in second.ledger.items()})
    return Result(second.outcome, ledger, second.message)


def config_error(run: Callable[[], object]) -> Result:
    """Run a builder that must refuse its config; nothing else happens."""
    try:
        run()
    except DetflowError as exc:
        return _error(exc)
    return Result("kept")
