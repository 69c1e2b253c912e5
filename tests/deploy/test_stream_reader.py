"""Live sources: the reader thread keeps the newest frame (dropping and counting stale ones),
reconnects after a dropped stream, and ends after too many failed reopenings."""

import time

import cv2
import numpy as np

from detflow.core.errors import DataError
from detflow.deploy.predict_inputs import Source
from detflow.deploy.stream_reader import LatestFrameReader


class FakeCapture:
    """``frames`` frames (each filled with its number), ``delay_s`` apart, then a failed read."""

    def __init__(self, start: int, frames: int, delay_s: float = 0.0):
        self.next, self.end, self.delay_s = start, start + frames, delay_s
        self.released = False

    def read(self):
        time.sleep(self.delay_s)
        if self.next >= self.end:
            return False, None
        frame = np.full((4, 4, 3), self.next % 256, np.uint8)
        self.next += 1
        return True, frame

    def release(self):
        self.released = True


def test_a_slow_consumer_gets_the_newest_frames_and_drops_are_counted():
    captures = iter([FakeCapture(0, 200, delay_s=0.001)])

    def opener():
        try:
            return next(captures)
        except StopIteration:
            raise DataError("stream gone") from None

    reader = LatestFrameReader(opener, reconnect_s=0.01, max_reconnects=1)
    taken = []
    for index, frame in reader:
        assert frame[0, 0, 0] == index % 256
        taken.append(index)
        time.sleep(0.02)  # inference is slower than the stream
    reader.close()
    assert taken == sorted(taken) and len(taken) < 100
    assert reader.read == 200 and reader.dropped == 200 - len(taken)


def test_a_dropped_stream_is_reopened_and_a_dead_one_ends():
    opened = []
    plan = iter([FakeCapture(0, 3), FakeCapture(3, 3)])

    def opener():
        try:
            capture = next(plan)
        except StopIteration:
            raise DataError("stream unreachable") from None
        opened.append(capture)
        return capture

    reader = LatestFrameReader(opener, reconnect_s=0.01, max_reconnects=2)
    taken = [index for index, _ in reader]  # a fast consumer: nothing dropped
    reader.close()
    assert reader.reconnects == 2 and len(opened) == 2
    assert all(capture.released for capture in opened)
    assert taken[-1] == 5 and reader.read == 6 and reader.dropped + len(taken) == 6
    assert reader.error == "stream unreachable"


def test_a_live_source_yields_items_and_reports_stats(tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (32, 24))
    for _ in range(5):
        writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()
    source = Source(
        "video", "stream", target=str(video), max_frames=12, live=True, reconnect_s=0.01
    )
    items = list(source)  # the file "drops" at its end and is reopened: a looping stream
    assert len(items) == 12 and all(item.image.shape == (24, 32, 3) for item in items)
    assert source.stats["reconnects"] >= 1
    assert source.stats["frames_read"] == source.stats["dropped"] + 12  # each read: used or counted
