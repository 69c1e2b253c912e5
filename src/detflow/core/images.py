"""Safe image opening: a pixel limit against decompression bombs, EXIF orientation, RGB."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from detflow.core.errors import DataError, require_positive

DEFAULT_MAX_PIXELS = 100_000_000


class PixelLimitError(DataError):
    """An image larger than the pixel limit (a possible decompression bomb)."""


def image_size(data: bytes, *, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Return ``(width, height)`` from an encoded image's header, without decoding pixels.

    Raises DataError when the bytes are not an image or the image exceeds ``max_pixels``.
    """
    image = _open(data, name=name, max_pixels=max_pixels)
    return image.size


def image_header(
    data: bytes, *, name: str, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int, int]:
    """``(width, height, EXIF orientation)`` of the stored image from its header (orientation 1
    when absent), without decoding pixels; errors as :func:`image_size`."""
    image = _open(data, name=name, max_pixels=max_pixels)
    return (*image.size, _orientation(image))


def decode_rgb(
    data: bytes, *, name: str, max_pixels: int = DEFAULT_MAX_PIXELS, allow_truncated: bool = False
) -> Image.Image:
    """Decode to 8-bit RGB with EXIF orientation applied to the pixels.

    Raises DataError for unreadable or truncated images (``allow_truncated`` keeps the
    decodable part of a truncated file instead) and PixelLimitError for oversized ones.
    """
    return decode_with_info(
        data, name=name, max_pixels=max_pixels, allow_truncated=allow_truncated
    )[0]


def decode_with_info(
    data: bytes, *, name: str, max_pixels: int = DEFAULT_MAX_PIXELS, allow_truncated: bool = False
) -> tuple[Image.Image, dict]:
    """:func:`decode_rgb` in one decode, plus what the file was: ``format``, ``mode`` and
    EXIF ``orientation`` (1 when absent)."""
    image = _open(data, name=name, max_pixels=max_pixels)
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allow_truncated
    try:
        image.load()
        info = {"format": image.format, "mode": image.mode, "orientation": _orientation(image)}
        if info["orientation"] not in (0, 1):  # (exif_transpose copies even when not turning)
            image = ImageOps.exif_transpose(image)
        return _to_rgb8(image), info
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"{name}: image cannot be decoded ({stable_text(exc)}); re-export or remove it"
        ) from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - unreadable EXIF means "as stored"
        return 1


def load_rgb(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image file as 8-bit RGB (see :func:`decode_rgb`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read image ({exc.strerror})") from exc
    return decode_rgb(data, name=str(path), max_pixels=max_pixels)


def _open(data: bytes, *, name: str, max_pixels: int) -> Image.Image:
    if not data:
        raise DataError(f"{name}: zero-byte file; re-export or remove it")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PixelLimitError(f"{name}: image exceeds the pixel limit ({exc})") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(
                f"{name}: not a readable image ({stable_text(exc)}); re-export or remove it"
            ) from exc
    check_pixel_limit(*image.size, name=name, max_pixels=max_pixels)
    return image


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def stable_text(exc: BaseException) -> str:
    """An exception's text without object representations (``<_io.BytesIO object at 0x…>``,
    which differ between runs): reports built from it stay byte-identical."""
    return _OBJECT_REPR.sub("the data", str(exc))


def _to_rgb8(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):  # 16/32-bit integer grayscale → 8 bit
        array = np.asarray(image.convert("I"), dtype=np.int64)
        scale = 257 if array.size and array.max() > 255 else 1
        return Image.fromarray(np.clip(array // scale, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def require_pixel_limit(max_pixels) -> int:
    """``limits.max_pixels`` checked: a whole number of pixels > 0 (ConfigError otherwise)."""
    require_positive("limits.max_pixels", max_pixels, integer=True)
    return max_pixels


def check_pixel_limit(width: int, height: int, *, name: str, max_pixels: int) -> None:
    """Raise PixelLimitError when a ``width`` × ``height`` picture (an image header, a video
    frame before it is decoded) exceeds ``max_pixels``."""
    if width * height > max_pixels:
        raise PixelLimitError(
            f"{name}: {width}x{height} exceeds the pixel limit {max_pixels}; "
            "downscale it or raise limits.max_pixels"
        )


RESIZE_MODES = ("none", "stretch", "fit", "letterbox")


def resize_policy(image: Image.Image, *, mode: str, size: int):
    """Resize an RGB image by policy; returns ``(image, (scale_x, scale_y, offset_x,
    offset_y))`` mapping old pixel coordinates to new ones.

    ``stretch``: to ``size``×``size``; ``fit``: keep aspect, long side ``size`` (never
    enlarges); ``letterbox``: keep aspect inside ``size``×``size``, centred, black padding.
    """
    width, height = image.size
    if mode == "none":
        return image, (1.0, 1.0, 0.0, 0.0)
    if mode == "stretch":
        return image.resize((size, size), Image.BILINEAR), (size / width, size / height, 0.0, 0.0)
    scale = size / max(width, height)
    if mode == "fit" and scale >= 1:
        return image, (1.0, 1.0, 0.0, 0.0)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = image.resize((new_w, new_h), Image.BILINEAR)
    sx, sy = new_w / width, new_h / height
    if mode == "fit":
        return resized, (sx, sy, 0.0, 0.0)
    canvas = Image.new("RGB", (size, size))
    ox, oy = (size - new_w) // 2, (size - new_h) // 2
    canvas.paste(resized, (ox, oy))
    return canvas, (sx, sy, float(ox), float(oy))
