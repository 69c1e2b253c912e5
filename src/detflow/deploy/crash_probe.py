"""Does a model survive any input size? Run it, in a child process, on images of sizes and
aspect ratios unlike the test split's, before the budget may accept it.

A runtime can crash the whole process on some inputs: ONNX Runtime 1.32 ends with a
segmentation fault on some inputs of a static INT8 Faster R-CNN whose ``Mul`` nodes are
quantized, at its default optimisation level with 2 threads (docs/benchmarks.md). A deployed
model that did so would take ``detflow serve`` down with it, so the optimize stage rejects
such a variant with the size that crashed it. The child loads the model as the benchmark
does (:func:`detflow.deploy.detectors.load_detector`) and runs seeded noise images
(``[3, H, W]`` float32 in 0..1) of :data:`PROBE_SIZES` one after another. No torch.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

# (height, width): square, near-square both ways, wide, tall, odd sizes
PROBE_SIZES = (
    (416, 416),
    (386, 436),
    (436, 386),
    (300, 500),
    (500, 300),
    (360, 640),
    (97, 601),
    (601, 97),
)
CHILD = "import sys; from detflow.deploy.crash_probe import run_sizes; run_sizes(sys.argv[1:])"


def crash_reason(path: str | Path, *, providers=None, timeout_s: float = 600.0) -> str | None:
    """``None`` when the model at ``path`` runs every :data:`PROBE_SIZES` input in a child
    process; else why not: the signal or exit code and the input size it died on."""
    args = [sys.executable, "-c", CHILD, str(path), json.dumps(providers)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"did not finish {len(PROBE_SIZES)} probe images in {timeout_s:.0f} s"
    if done.returncode == 0:
        return None
    started = [line for line in done.stdout.splitlines() if line.startswith("size ")]
    where = f" on a {started[-1][5:]} input" if started else " while loading"
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return f"the runtime crashed the process ({name}){where}"
    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
    return f"failed{where}: {last[:300]}"


def run_sizes(argv: list[str]) -> None:
    """The child: ``argv`` = the model path and its ORT providers as JSON (``null``: the
    default; a ``[name, options]`` pair for a provider with options)."""
    from detflow.deploy.detectors import load_detector

    providers = json.loads(argv[1])
    if providers is not None:
        providers = [tuple(p) if isinstance(p, list) else p for p in providers]
    detector = load_detector(argv[0], providers=providers)
    rng = np.random.default_rng(0)
    for height, width in PROBE_SIZES:
        print(f"size {height}×{width}", flush=True)  # the last line printed names a crash
        detector(rng.integers(0, 256, (3, height, width)).astype(np.float32) / 255)
