"""What a source reader returns: images with their boxes, and everything it had to drop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SourceBox:
    """One labelled box: ``xyxy`` in absolute pixels of its image."""

    class_name: str
    xyxy: tuple[float, float, float, float]


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

    def read_bytes(self) -> bytes:
        return self.data if self.data is not None else Path(self.path).read_bytes()


@dataclass
class SourceScan:
    """A reader's result: class names (in id order), kept images and dropped items."""

    class_names: list[str]
    images: list[SourceImage] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # {"path", "item", "reason", "detail"}
    resources: list = field(default_factory=list, repr=False)  # e.g. temporary folders

    def close(self) -> None:
        """Release scratch resources (extracted archives, decoded frames) the images use."""
        for resource in reversed(self.resources):
            resource.cleanup()
        self.resources.clear()

    def drop(self, path: str, item: str, reason: str, detail: str = "") -> None:
        """Record a dropped ``item`` (image | box | label | frame | video | member) with a
        reason code and detail."""
        self.dropped.append({"path": path, "item": item, "reason": reason, "detail": detail})
