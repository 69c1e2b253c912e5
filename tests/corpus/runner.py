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
    """What a case did: its outcome and ``{unit: (input, kept, dropped[, incomplete])}``
    (changed units are kept ones; an incomplete image is kept by collect for clean to judge)."""

    outcome: str
    ledger: dict[str, tuple[int, ...]] = field(default_factory=dict)
    message: str = ""


REPORTS: list[tuple[str, dict]] = []  # every stage report the runners produced, in order


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


def reason_code(reason: str) -> str:
    """``bad_columns`` of an incomplete reason ``"labels/a.txt:1: bad_columns"`` (a detail
    may follow in parentheses)."""
    return reason.rsplit(": ", 1)[-1].split(" ", 1)[0]


def collect(source: dict, out: Path, *, images: int, boxes: int, item: str, **kw) -> Result:
    """Run collect; the outcome for ``item`` (a substring of a path): ``incomplete: <first
    reason>`` when an image it names (or whose reasons name it) is incomplete, else the
    first drop whose path contains it, else the first change, else kept."""
    try:
        report = collect_dataset(options=CollectOptions.from_config(source, **kw), out_dir=out)
    except DetflowError as exc:
        return _error(exc)
    REPORTS.append(("collect", report))
    incomplete = [
        entry
        for entry in report["incomplete"]
        if item in entry["source"] or any(item in r for r in entry["reasons"])
    ]
    drops = [d for d in report["dropped"] if item in d["path"]]
    changes = [c for c in report["changed"] if item in c["path"]]
    if incomplete:
        outcome = f"incomplete: {reason_code(incomplete[0]['reasons'][0])}"
    elif drops:
        outcome = f"dropped: {drops[0]['reason']}"
    else:
        outcome = f"changed: {changes[0]['kind']}" if changes else "kept"
    dropped = {kind: sum(d["item"] == kind for d in report["dropped"]) for kind in ("image", "box")}
    members = sum(d["item"] == "member" for d in report["dropped"])
    partial = report["incomplete_images"]
    return Result(
        outcome,
        {
            "images": (images, report["images"] - partial, dropped["image"] + members, partial),
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
    REPORTS.append(("clean", report))
    cleaned = manifest.load_dataset(out / "dataset.json")
    for image in cleaned["images"]:  # every kept image is 8-bit RGB of its recorded size
        with Image.open(out / "images" / image["file_name"]) as opened:
            assert opened.mode == "RGB" and opened.size == (image["width"], image["height"])
    drops = [d for d in report["dropped"] if d["source"] == source]
    changes = next((im.get("changes") for im in cleaned["images"] if im["source"] == source), 0)
    incomplete = [d for d in drops if d["item"] == "image" and d["reason"] == "incomplete"]
    kept_incomplete = [e for e in report["incomplete_kept"] if e["source"] == source]
    if incomplete or kept_incomplete:
        first = incomplete[0]["detail"] if incomplete else kept_incomplete[0]["reasons"][0]
        outcome = f"incomplete: {reason_code(first.split('; ')[0])}"
    elif drops:
        outcome = f"dropped: {drops[0]['reason']}"
    elif changes:
        outcome = f"changed: {changes[0]}"
    elif report["boxes_clipped"]:
        outcome = "changed: clipped"
    else:
        outcome = "kept"
    partial = report["images_incomplete_kept"]
    return Result(
        outcome,
        {
            "images": (
                report["images_in"],
                report["images_kept"] - partial,
                report["images_dropped"],
                partial,
            ),
            "boxes": (report["boxes_in"], report["boxes_kept"], report["boxes_dropped"]),
        },
    )


def collect_then_clean(
    source: dict, tmp: Path, *, images: int, boxes: int, item: str, **policy
) -> Result:
    """The case's outcome after collect and clean; both stages' ledgers are checked. An
    image collect marks incomplete must leave clean as incomplete too (dropped by default)."""
    first = collect(source, tmp / "raw", images=images, boxes=boxes, item=item)
    if first.outcome.startswith(("dropped", "error")):
        return first
    raw = manifest.load_dataset(tmp / "raw" / "dataset.json")
    name = next(
        im["source"]
        for im in raw["images"]
        if item in im["source"] or any(item in r for r in im.get("incomplete", []))
    )
    second = clean(tmp / "raw" / "dataset.json", tmp / "clean", name, **policy)
    ledger = {f"collect {k}": v for k, v in first.ledger.items()}
    ledger.update({f"clean {k}": v for k, v in second.ledger.items()})
    if first.outcome.startswith("incomplete"):
        assert second.outcome == first.outcome, (first.outcome, second.outcome)
    outcome = second.outcome if first.outcome == "kept" else first.outcome
    return Result(outcome, ledger, second.message)


def config_error(run: Callable[[], object]) -> Result:
    """Run a builder that must refuse its config; nothing else happens."""
    try:
        run()
    except DetflowError as exc:
        return _error(exc)
    return Result("kept")
