"""Archive reader: a ``.zip`` or ``.tar`` (``.gz``/``.bz2``/``.xz``) holding a dataset of any
other format, described by ``contents`` (``format`` plus that format's keys; ``path`` is the
dataset folder inside the archive, default: the archive's only top folder or its root).

Members are checked one by one and only plain files and folders are written, by this module,
into a scratch folder: absolute names, ``..`` parts, links and device files are rejected and
listed (``unsafe_member``); ``max_bytes`` caps what is unpacked. Box formats are those of the
inner reader (``xyxy`` pixels out).
"""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from detflow.core.errors import DataError, require_positive
from detflow.data.formats.base import SourceScan

DEFAULT_MAX_BYTES = 20 * 1024**3
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def read_archive(
    path: str | Path,
    *,
    contents: dict,
    workdir: Path,
    scan_inner: Callable[[dict, Path], SourceScan],
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> SourceScan:
    """Unpack ``path`` safely into ``workdir`` and scan it with ``scan_inner(contents, root)``
    (``contents`` with ``path`` resolved inside the unpacked folder)."""
    require_positive("data.max_bytes", max_bytes)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: archive not found; set data.path to a .zip or .tar(.gz) file")
    root = workdir / "archive"
    root.mkdir(parents=True)
    rejected = SourceScan(class_names=[])
    for name, reason in unpack(path, root, max_bytes=max_bytes):
        rejected.drop(name, "member", "unsafe_member", reason)
    inner_root = _inner_root(root, contents.get("path"))
    scan = scan_inner({**contents, "path": str(inner_root)}, workdir / "inner")
    prefix = inner_root.relative_to(root).as_posix()
    for image in scan.images:
        image.source = _join(prefix, image.source)
        image.incomplete = [_join(prefix, reason) for reason in image.incomplete]
    for item in [*scan.dropped, *scan.changed]:
        item["path"] = _join(prefix, item["path"])
    scan.dropped[:0] = rejected.dropped
    return scan


def unpack(path: Path, root: Path, *, max_bytes: int) -> list[tuple[str, str]]:
    """Write ``path``'s safe members under ``root``; return ``(member, reason)`` of the rest."""
    try:
        if path.name.lower().endswith(".zip") or zipfile.is_zipfile(path):
            return _unpack(_zip_members(path), root, max_bytes, path)
        if path.name.lower().endswith(TAR_SUFFIXES) or tarfile.is_tarfile(path):
            return _unpack(_tar_members(path), root, max_bytes, path)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{path}: cannot read the archive ({exc}); re-create it") from exc
    raise DataError(f"{path}: not a .zip or .tar(.gz/.bz2/.xz) archive; set data.path to one")


def _unpack(members: Iterator, root: Path, max_bytes: int, archive: Path) -> list:
    rejected, written, seen = [], 0, set()
    for name, kind, opener in tqdm(members, desc="unpack", unit="file", leave=False, disable=None):
        problem = _unsafe(name, kind) or ("duplicate name" if name in seen else None)
        if problem:
            rejected.append((name, problem))
            continue
        seen.add(name)
        target = root.joinpath(*PurePosixPath(name.replace("\\", "/")).parts)
        if kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener() as source, open(target, "xb") as sink:
            written += _copy(source, sink, max_bytes - written, archive)
    return rejected


def _copy(source, sink, budget: int, archive: Path) -> int:
    count = 0
    for chunk in iter(lambda: source.read(1 << 20), b""):
        count += len(chunk)
        if count > budget:
            raise DataError(
                f"{archive}: unpacks to more than data.max_bytes; raise it if this is expected"
            )
        sink.write(chunk)
    return count


def _unsafe(name: str, kind: str) -> str | None:
    if kind not in ("file", "dir"):
        return f"{kind} members are not allowed"
    posix = name.replace("\\", "/")
    if not posix.strip("/") or "\x00" in posix:
        return "empty or invalid name"
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "'..' in path"
    return None


def _zip_members(path: Path) -> Iterator:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            mode = info.external_attr >> 16
            if info.is_dir():
                kind = "dir"
            elif stat.S_ISLNK(mode):
                kind = "symlink"
            elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                kind = "special-file"
            else:
                kind = "file"
            yield info.filename, kind, lambda info=info: archive.open(info)


def _tar_members(path: Path) -> Iterator:
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            if member.isdir():
                kind = "dir"
            elif member.isfile():
                kind = "file"
            elif member.issym() or member.islnk():
                kind = "link"
            else:
                kind = "device-or-fifo"
            yield member.name, kind, lambda member=member: archive.extractfile(member)


def _inner_root(root: Path, inner: str | None) -> Path:
    if inner in (None, "", "."):
        entries = [p for p in root.iterdir() if not p.name.startswith(("__MACOSX", "."))]
        return entries[0] if len(entries) == 1 and entries[0].is_dir() else root
    posix = PurePosixPath(str(inner).replace("\\", "/"))
    target = root.joinpath(*posix.parts)
    if posix.is_absolute() or ".." in posix.parts or not target.is_dir():
        raise DataError(
            f"data.contents.path={inner!r}: no such folder inside the archive; "
            "give the dataset folder relative to the archive root"
        )
    return target


def _join(prefix: str, rel: str) -> str:
    return rel if prefix in ("", ".") else f"{prefix}/{rel}"
