"""Issue 38's latency acceptance, side by side in one run: a model's deployed form
(``--deployed``, what optimize picked; default this checkout's ``models/deploy``) and its ORT
FP32 export (``--current``) against another model's ORT FP32 export (``--previous``: today's
default, FCOS with a standard 128-channel head at 416 px, 7.5 GFLOPs).

Every detector runs on the same val images, batch 1, on ``--threads`` threads, in
``--rounds`` interleaved rounds, the order reversed every other round
(:func:`detflow.deploy.latency_rounds.time_in_rounds`); prints each one's p50 / p95 and its
ratio to the ``--previous`` ORT FP32, with the CPU's instruction sets. The previous
export is any ONNX file of that model, e.g. from the commit before the change:
``dvc get . models/export/model.onnx --rev 365edd0 -o /tmp/previous.onnx`` (or its DVC cache).
On a CPU with AVX-512 run it again with ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN, which
OpenVINO's CPU plugin builds on) to see the ordinary CPU's case; ONNX Runtime's CPU kernels
(MLAS) pick their instruction set themselves and have no such switch.

Usage: python bench/previous_default.py --previous /tmp/previous.onnx [--rounds 5]
       [--threads 0] [--images 0]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from detflow.core.machine import machine_info
from detflow.data.torch_dataset import DetectionDataset
from detflow.deploy.latency_rounds import time_in_rounds
from detflow.deploy.runtime import model_file, open_model

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--previous", type=Path, required=True, help="previous default's ONNX")
    parser.add_argument("--deployed", type=Path, default=REPO / "models" / "deploy")
    parser.add_argument("--current", type=Path, default=REPO / "models/export/model.onnx")
    parser.add_argument("--val", type=Path, default=REPO / "data/split/val.json")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0: all cores")
    parser.add_argument("--images", type=int, default=0, help="0: every val image")
    args = parser.parse_args()
    deployed = model_file(args.deployed)  # a folder's model.xml, else its model.onnx
    paths = {
        "previous, ORT FP32": args.previous,
        "current, ORT FP32": args.current,
        f"current, deployed ({deployed.name})": deployed,
    }
    detectors = {name: open_model(path, threads=args.threads) for name, path in paths.items()}
    dataset = DetectionDataset(args.val)
    count = len(dataset) if args.images <= 0 else min(args.images, len(dataset))
    images = [dataset[index][0].numpy() for index in range(count)]
    for detector in detectors.values():  # warm-up, untimed
        detector(images[0])
    timed = time_in_rounds(detectors, images, rounds=args.rounds)
    info = machine_info()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "not set")
    print(f"machine: {info['cpu']}, {info['cores']} cores, instruction sets "
          f"{', '.join(info['instruction_sets'] or ['unknown'])}; ONEDNN_MAX_CPU_ISA {isa}; "
          f"{info['packages']}")  # fmt: skip
    print(f"{count} val images, batch 1, {args.threads or 'all'} threads, {args.rounds} rounds\n")
    base = timed["previous, ORT FP32"]["latency_ms_p50"]
    print(f"previous: {args.previous}; current: {args.current}; deployed: {deployed}")
    print("| model | p50 ms | p95 ms | p50 / previous ORT FP32 |")
    print("|---|---|---|---|")
    for name, row in timed.items():
        p50, p95 = row["latency_ms_p50"], row["latency_ms_p95"]
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {p50 / base:.3f} |")


if __name__ == "__main__":
    main()
