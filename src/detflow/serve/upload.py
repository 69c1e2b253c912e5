"""The image of a ``/v1/detect`` request: its bytes from a raw body or a multipart upload,
bounded, and decoded to an ``[H, W, 3]`` uint8 RGB array (in the thread pool); and
:class:`ApiError`, a client error the app answers as 4xx JSON."""

from __future__ import annotations

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from detflow.core.errors import DataError
from detflow.core.images import PixelLimitError, decode_rgb

RAW_TYPES = ("image/", "application/octet-stream")
MULTIPART_SLACK = 64 * 1024  # the multipart framing around the file


class ApiError(Exception):
    """A client error: HTTP ``status``, ``kind`` (metric label and ``error``), ``detail``."""

    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


async def read_image(request: Request, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """The uploaded image as ``[H, W, 3]`` uint8 RGB; decoded in the thread pool, so the
    event loop stays free. ApiError (4xx) for anything wrong with the upload."""
    data = await read_image_bytes(request, max_bytes)
    return await run_in_threadpool(decode, data, max_pixels)


async def read_image_bytes(request: Request, limit: int) -> bytes:
    """The image's bytes from a raw body or a multipart upload, at most ``limit`` bytes."""
    content_type = request.headers.get("content-type", "").lower()
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith(RAW_TYPES):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type {content_type or 'missing'!r}: send the image as image/* or "
            "application/octet-stream, or as a multipart/form-data field 'image'",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise ApiError(413, "upload_too_large", f"{declared} bytes; the limit is {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit + (MULTIPART_SLACK if multipart else 0):
            raise ApiError(413, "upload_too_large", f"over the limit of {limit} bytes")
    if not multipart:
        return _check_size(bytes(body), limit)
    return _check_size(await _multipart_file(request, bytes(body)), limit)


async def _multipart_file(request: Request, body: bytes) -> bytes:
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form(max_files=1, max_fields=20)
    except Exception as exc:  # noqa: BLE001 - starlette raises several kinds here
        raise ApiError(400, "bad_multipart", f"multipart body cannot be parsed ({exc})") from exc
    try:
        upload = form.get("image") or form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "no_image", "multipart upload without a file field 'image'")
        return await upload.read()
    finally:
        await form.close()


def _check_size(data: bytes, limit: int) -> bytes:
    if len(data) > limit:
        raise ApiError(413, "upload_too_large", f"{len(data)} bytes; the limit is {limit} bytes")
    if not data:
        raise ApiError(400, "empty_body", "zero bytes received; send an image")
    return data


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """``data`` decoded to ``[H, W, 3]`` uint8 RGB, at most ``max_pixels`` pixels."""
    try:
        return np.asarray(decode_rgb(data, name="upload", max_pixels=max_pixels))
    except PixelLimitError as exc:
        raise ApiError(413, "too_many_pixels", str(exc)) from exc
    except DataError as exc:
        raise ApiError(400, "not_an_image", str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the upload's fault
        raise ApiError(400, "not_an_image", f"upload: image cannot be decoded ({exc})") from exc
