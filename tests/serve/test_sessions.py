"""``serve.sessions``: one ONNX Runtime session per worker thread of a model, the cores shared
out among them; the threads take turns on one queue and give the one-session answers."""

import os

import numpy as np
from PIL import Image

from detflow.serve.batching import BatchWorker, load_model


def _images(folder) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]


def test_sessions_are_separate_sessions_with_the_cores_shared_out(served_model):
    model, _ = served_model
    loaded = load_model("m", model, provider="cpu", threads=0, sessions=2)
    first, second = loaded.detectors
    assert first is not second and first.session is not second.session
    per_session = max(1, (os.cpu_count() or 1) // 2)
    for detector in loaded.detectors:
        assert detector.session.get_session_options().intra_op_num_threads == per_session
    assert loaded.detector is first  # class names and metadata come from the first


def test_a_worker_runs_one_thread_per_session_with_the_one_session_results(served_model):
    model, folder = served_model
    images = _images(folder) * 4
    single = BatchWorker(
        load_model("m", model, provider="cpu", threads=1), max_batch=1, max_wait_ms=0,
        queue_size=64,
    )  # fmt: skip
    double = BatchWorker(
        load_model("m", model, provider="cpu", threads=1, sessions=2), max_batch=1,
        max_wait_ms=0, queue_size=64,
    )  # fmt: skip
    try:
        assert len(double._threads) == 2 and double.alive
        expected = [single.submit(image).result(60)[0] for image in images]
        futures = [double.submit(image) for image in images]
        for want, future in zip(expected, futures, strict=True):
            got = future.result(60)[0]
            for key in ("boxes", "labels", "scores"):
                np.testing.assert_array_equal(got[key], want[key])
    finally:
        single.stop()
        double.stop()
    assert not double.alive
