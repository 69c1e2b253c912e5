"""What a source reader returns: images with their boxes, and everything it had to drop.

A box dropped for a reason that leaves a real object unlabelled (:data:`LOST_OBJECT`) makes
its image *incomplete*: the image is kept in the canonical dataset with the reasons and
``clean.incomplete_images`` decides (drop by default). Boxes removed on purpose
(:data:`ON_PURPOSE`: a class left out of ``data.names``, mapped to null in
``data.class_map``, or ``data.difficult=drop``) never make an image incomplete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# drop reasons (of a box or label) that leave a real object of the image without its box
LOST_OBJECT = frozenset(
    {
        "bad_box",
        "bad_columns",
        "bad_points",
        "bad_record",
        "missing_box",
        "missing_class",
        "no_label",
        "non_finite",
        "non_numeric",
        "unknown_class",
        "unreadable_label",
    }
)
# drop reasons of boxes removed on purpose: counted apart, the image stays complete
ON_PURPOSE = frozenset({"class_dropped", "class_not_selected", "difficult_dropped"})
IGNORE_KINDS = ("difficult", "crowd")  # boxes evaluation ignores and training leaves out


@dataclass(frozen=True)
class SourceBox:
    """One labelled box: ``xyxy`` in absolute pixels of its image. ``ignore``: None, or
    ``"difficult"`` (VOC) / ``"crowd"`` (COCO ``iscrowd``), see ``data.difficult``."""

    class_name: str
    xyxy: tuple[float, float, float, float]
    ignore: str | None = None


@dataclass
class SourceImage:
    """One image of a source: its bytes come from ``path`` or, for generated data, ``data``."""

    source: str  # where it came from, relative to the source root (posix)
    group: str  # images sharing a group are kept in one split
    width: int
    height: int
    boxes: list[SourceBox]
    path: Path | None = None
    data: bytes | None = None
    split: str | None = None  # the source's own predefined split, if any
    labelled: bool = True  # False: not annotated yet (video frames), not a negative
    incomplete: list[str] = field(default_factory=list)  # why a real object lost its box
    changes: list[str] = field(default_factory=list)  # e.g. polygon_to_box, rescaled_boxes

    def read_bytes(self) -> bytes:
        return self.data if self.data is not None else Path(self.path).read_bytes()


@dataclass
class SourceScan:
    """A reader's result: class names (in id order), kept images and dropped items.
    ``class_names_from``: the file or key that named the classes (e.g. ``data.yaml``,
    ``classes.txt``), where the reader records it."""

    class_names: list[str]
    images: list[SourceImage] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # {"path", "item", "reason", "detail"}
    changed: list[dict] = field(default_factory=list)  # {"path", "kind", "detail"}
    resources: list = field(default_factory=list, repr=False)  # e.g. temporary folders
    class_names_from: str | None = None

    def close(self) -> None:
        """Release scratch resources (extracted archives, decoded frames) the images use."""
        for resource in reversed(self.resources):
            resource.cleanup()
        self.resources.clear()

    def drop(self, path: str, item: str, reason: str, detail: str = "") -> None:
        """Record a dropped ``item`` (image | box | label | frame | video | member) with a
        reason code and detail."""
        self.dropped.append({"path": path, "item": item, "reason": reason, "detail": detail})

    def change(self, path: str, kind: str, detail: str = "") -> None:
        """Record a box (or label) read with a change of ``kind`` (e.g. ``polygon_to_box``)."""
        self.changed.append({"path": path, "kind": kind, "detail": detail})

    def lost_since(self, start: int) -> list[str]:
        """``"<path>: <reason>"`` of the drops recorded after index ``start`` that leave a
        real object unlabelled (:data:`LOST_OBJECT`)."""
        return [
            f"{d['path']}: {d['reason']}"
            for d in self.dropped[start:]
            if d["reason"] in LOST_OBJECT and d["item"] in ("box", "label")
        ]
