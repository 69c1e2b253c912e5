"""Benchmark: batch 1 vs batch 8 for the default detector (fasterrcnn_mobilenet_v2).

The exported detector takes one ``[3, H, W]`` image: torchvision's detectors take a list of
images and loop over it (anchors, proposal filtering and NMS, detection post-processing),
and tracing unrolls those loops into a graph for a fixed number of images. So the batch
axis is an ONNX ``Loop`` around the single-image graph (:mod:`detflow.deploy.batch_graph`,
what ``detflow serve`` runs). This script measures, side by side in one run:

1. the batched graph of each ONNX variant given (default: ``ort_fp32`` and ``int8_static``
   from ``models/optimized``) at batch 1 and batch 8 (one ORT call for 8 images), against
   the single-image graph called 8 times, in interleaved rounds;
2. why the ratio stays small: the parts of the network that do have a batch axis, exported
   on their own with a dynamic batch and timed at batch 1 and batch 8: the trunk + RPN head
   (``[B, 3, H, W]`` → feature map, objectness, box deltas) and the box head (``[B·R, 256,
   7, 7]`` pooled RoIs → class logits, box regression; ``R`` = test proposals). With the
   single-image graph's time, that gives the best batch-8 / batch-1 ratio the whole model
   could reach here (the per-image rest, RoI pooling, decoding, NMS, unchanged);
3. the whole detector traced on a batch of 2 (``model(list(x.unbind(0)))``): the graph has
   one output pair per traced image and refuses a batch of 3.

Needs the training stack (torch), ``models/train/best.pt`` and ``models/optimized/*.onnx``.

Usage: python bench/batch_axis.py [--checkpoint models/train/best.pt]
       [--variants models/optimized/ort_fp32.onnx models/optimized/int8_static.onnx]
       [--runs 24] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from detflow.deploy.onnx_detector import OnnxDetector, make_session
from detflow.model.restore import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


class Trunk(torch.nn.Module):
    """``[B, 3, H, W]`` → (features, objectness, box deltas): backbone and RPN head."""

    def __init__(self, model):
        super().__init__()
        self.backbone, self.head = model.backbone, model.rpn.head

    def forward(self, x):
        features = self.backbone(x)
        objectness, deltas = self.head([features])
        return features, objectness[0], deltas[0]


class BoxHead(torch.nn.Module):
    """``[N, 256, 7, 7]`` pooled RoIs → (class logits, box regression)."""

    def __init__(self, model):
        super().__init__()
        self.head, self.predictor = model.roi_heads.box_head, model.roi_heads.box_predictor

    def forward(self, pooled):
        return self.predictor(self.head(pooled))


class ListBatch(torch.nn.Module):
    """The whole detector on ``[B, 3, H, W]`` as a list of B images (what tracing sees)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        outputs = self.model(list(x.unbind(0)))
        return tuple(t for out in outputs for t in (out["boxes"], out["scores"]))


def export(module, sample, path: Path, axis_name: str, outputs: int) -> Path:
    names = [f"out{i}" for i in range(outputs)]
    torch.onnx.export(
        module,
        (sample,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=names,
        dynamic_axes={"x": {0: axis_name}, **{n: {0: axis_name} for n in names}},
    )
    return path


def images_per_s(session, feed: dict, images: int, runs: int) -> float:
    session.run(None, feed)
    start = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    return images * runs / (time.perf_counter() - start)


def batched_rates(paths: list[Path], size: int, rounds: int) -> dict:
    """img/s per (variant, way): the single-image graph 8 times, the batched graph at batch 1
    (8 calls) and at batch 8 (one call); interleaved rounds, the median of each."""
    rng = np.random.default_rng(0)
    images = [rng.random((3, size, size), dtype=np.float32) for _ in range(8)]
    detectors = {path.stem: OnnxDetector(path, postprocess=False) for path in paths}
    ways = {
        "single-image graph": lambda d: [d(image) for image in images],
        "batched graph, batch 1": lambda d: [d.detect_batch([image]) for image in images],
        "batched graph, batch 8": lambda d: d.detect_batch(images),
    }
    times: dict = {}
    for detector in detectors.values():  # warm up, and build the batched session
        for run in ways.values():
            run(detector)
    for _ in range(rounds):
        for name, detector in detectors.items():
            for way, run in ways.items():
                start = time.perf_counter()
                run(detector)
                times.setdefault((name, way), []).append(time.perf_counter() - start)
    return {key: len(images) / float(np.median(value)) for key, value in times.items()}


def print_batched(rates: dict) -> None:
    print(
        "| variant | single-image graph img/s | batched, batch 1 img/s | batched, batch 8 img/s "
        "| batch 8 / batch 1 |\n|---|---|---|---|---|"
    )
    for name in dict.fromkeys(key[0] for key in rates):
        single, one, eight = (
            rates[name, way]
            for way in ("single-image graph", "batched graph, batch 1", "batched graph, batch 8")
        )
        print(f"| {name} | {single:.2f} | {one:.2f} | {eight:.2f} | {eight / one:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=str(REPO / "models" / "train" / "best.pt"))
    optimized = REPO / "models" / "optimized"
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[str(optimized / "ort_fp32.onnx"), str(optimized / "int8_static.onnx")],
    )
    parser.add_argument("--runs", type=int, default=24, help="images per part measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the batched graph")
    args = parser.parse_args()
    model, _ = load_checkpoint(Path(args.checkpoint))
    model.eval()
    size, rois = model.transform.max_size, model.rpn.post_nms_top_n()
    print(f"default detector at {size} px, {rois} RoIs per image; cpu cores: {os.cpu_count()}")
    print_batched(batched_rates([Path(p) for p in args.variants], size, args.rounds))
    tmp = Path(tempfile.mkdtemp(prefix="batch-axis-"))
    with torch.no_grad():
        trunk = export(Trunk(model), torch.rand(2, 3, size, size), tmp / "trunk.onnx", "batch", 3)
        head = export(BoxHead(model), torch.rand(rois, 256, 7, 7), tmp / "head.onnx", "rois", 2)
    rng = np.random.default_rng(0)
    deploy = make_session(args.variants[0])
    image = rng.random((3, size, size), dtype=np.float32)
    full = images_per_s(deploy, {deploy.get_inputs()[0].name: image}, 1, args.runs)
    rates = {}
    for name, path in (("trunk", trunk), ("box head", head)):
        session = make_session(path)
        for batch in (1, 8):
            shape = (batch, 3, size, size) if name == "trunk" else (batch * rois, 256, 7, 7)
            feed = {"x": rng.random(shape, dtype=np.float32)}
            rates[name, batch] = images_per_s(session, feed, batch, max(args.runs // batch, 2))
    print("\n| part | batch 1 img/s | batch 8 img/s | batch 8 / batch 1 |\n|---|---|---|---|")
    for name in ("trunk", "box head"):
        one, eight = rates[name, 1], rates[name, 8]
        print(f"| {name} | {one:.2f} | {eight:.2f} | {eight / one:.2f} |")
    batched_1 = 1 / rates["trunk", 1] + 1 / rates["box head", 1]
    batched_8 = 1 / rates["trunk", 8] + 1 / rates["box head", 8]
    rest = max(1 / full - batched_1, 0.0)
    bound = (batched_1 + rest) / (batched_8 + rest)
    print(
        f"\nsingle-image graph: {full:.2f} img/s ({1000 / full:.0f} ms; trunk + box head "
        f"{1000 * batched_1:.0f} ms of it, per-image rest {1000 * rest:.0f} ms)\n"
        f"best batch-8 / batch-1 for the whole model here: {bound:.2f} "
        f"(trunk and box head batched, the rest unchanged)"
    )
    with torch.no_grad():
        sample = torch.rand(2, 3, size, size)
        traced = export(ListBatch(model), sample, tmp / "list.onnx", "batch", 0)
    session = make_session(traced)
    print(f"\nwhole detector traced on 2 images: {len(session.get_outputs())} outputs")
    try:
        session.run(None, {"x": rng.random((3, 3, size, size), dtype=np.float32)})
        print("batch of 3: ran (unexpected)")
    except ort.capi.onnxruntime_pybind11_state.Fail as exc:
        print(f"batch of 3: {str(exc).split('Status Message: ')[-1][:160]}")


if __name__ == "__main__":
    main()
