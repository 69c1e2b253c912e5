"""Live sources (cameras, RTSP/HTTP streams): frames read on their own thread, newest wins.

A camera or stream keeps producing frames while the model runs; reading them one by one
after each inference would fall behind and show ever older frames. :class:`LatestFrameReader`
reads on a thread and keeps only the newest frame: what inference takes is at most one frame
old, and every frame it never took is counted in ``dropped``. When a read fails (the stream
dropped), it reopens the source after ``reconnect_s`` and goes on; after ``max_reconnects``
failed reopenings in a row it ends. OpenCV only, no torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from detflow.core.errors import DataError


class LatestFrameReader:
    """``open_capture()`` returns an opened ``cv2.VideoCapture``-like object (``read()``,
    ``release()``) or raises DataError. Iterating yields ``(index, frame)`` — ``index`` counts
    every frame read, so gaps are the dropped ones — until the source ends for good or
    :meth:`close`."""

    def __init__(
        self,
        open_capture: Callable[[], object],
        *,
        reconnect_s: float = 1.0,
        max_reconnects: int = 5,
    ):
        self._open = open_capture
        self.reconnect_s, self.max_reconnects = reconnect_s, max_reconnects
        self.read = self.dropped = self.reconnects = 0
        self.error: str | None = None
        self._frame: tuple[int, np.ndarray] | None = None
        self._ended = False
        self._stop = threading.Event()
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="frame-reader", daemon=True)
        self._thread.start()

    def stats(self) -> dict:
        return {"frames_read": self.read, "dropped": self.dropped, "reconnects": self.reconnects}

    def __iter__(self):
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._frame is not None or self._ended)
                if self._frame is None:
                    return
                item, self._frame = self._frame, None
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._ready:  # a frame read but never taken was dropped too
            if self._frame is not None:
                self.dropped += 1
                self._frame = None

    def _loop(self) -> None:
        capture, failures = None, 0
        try:
            while not self._stop.is_set():
                if capture is None:
                    try:
                        capture = self._open()
                    except DataError as exc:
                        failures += 1
                        self.error = str(exc)
                        if failures > self.max_reconnects:
                            return
                        self._stop.wait(self.reconnect_s)
                        continue
                ok, frame = capture.read()
                if not ok:  # the stream dropped (or a file ended): reopen
                    capture.release()
                    capture = None
                    self.reconnects += 1
                    failures += 1
                    if failures > self.max_reconnects:
                        return
                    self._stop.wait(self.reconnect_s)
                    continue
                failures = 0
                with self._ready:
                    if self._frame is not None:
                        self.dropped += 1
                    self._frame = (self.read, frame)
                    self.read += 1
                    self._ready.notify()
        finally:
            if capture is not None:
                capture.release()
            with self._ready:
                self._ended = True
                self._ready.notify_all()
