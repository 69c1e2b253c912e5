"""Issue 38's lighter FCOS-MobileNetV2 candidates, measured side by side in one run
(``python bench/model_cost.py --candidates``): the means to decide the default, not the
decision (that needs accuracy: 3 seeds × 3 datasets of training, bench/candidate_table.py).

Each candidate is ``model=fcos_mobilenet_v2`` composed with its overrides of
``model.head_conv``, ``model.fpn_channels``, ``model.levels`` and the input size (the
default's own config otherwise, ImageNet trunk included). Per candidate: parameters, GFLOPs
per image at its input and per part (trunk, FPN, head: :mod:`detflow.evaluate.cost`), the
latency of one image (p50 ms over ``--runs`` generated 416×416 images, median over
``--rounds`` rounds in which every candidate and runtime runs in turn, the order reversed
every other round: :func:`detflow.deploy.latency_rounds.time_in_rounds`) with ONNX Runtime
FP32 (the graph :func:`detflow.deploy.export.export_onnx` writes) and PyTorch eager, each on 1
and 2 threads, and training images/s (``--train-steps`` SGD steps per round of
``train.batch_size`` generated 416 px images, detflow's optimizer and channels-last setting,
on ``--train-threads`` (0: all cores); the median over rounds, the candidates again in turn).
Then every figure as a ratio to the default's. Untrained heads score every location alike
(≈ 0.07, above the default 0.05), so the latency runs use ``--score-threshold`` (0.5): NMS
then sees few boxes, as with a trained model, and the figures compare the networks.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from detflow.core.machine import machine_info
from detflow.deploy.export import ExportOptions, export_onnx
from detflow.deploy.latency_rounds import time_in_rounds
from detflow.deploy.onnx_detector import OnnxDetector
from detflow.evaluate.cost import flops_by_part, model_cost
from detflow.model.backbone import train_mode
from detflow.model.build import build_model
from detflow.train.optimizers import build_optimizer

DEPTHWISE = ["model.head_conv=depthwise"]
FPN64 = [*DEPTHWISE, "model.fpn_channels=64"]
AT_320 = ["model.min_size=320", "model.max_size=320"]
CANDIDATES = {  # name: Hydra overrides of model=fcos_mobilenet_v2
    "default": [],
    "depthwise head": DEPTHWISE,
    "dw + fpn 64": FPN64,
    "dw + fpn 64 + levels 8-32": [*FPN64, "model.levels=[8,16,32]"],
    "dw @320": [*DEPTHWISE, *AT_320],
    "dw + fpn 96 @320": [*DEPTHWISE, "model.fpn_channels=96", *AT_320],
    "dw + fpn 64 @320": [*FPN64, *AT_320],
}
THREADS = (1, 2)
# ONNX node names (the exporter keeps the module path) → part; anything else (resize and
# normalise, box decoding, NMS) is "rest"
NODE_PARTS = {"/backbone/body/": "trunk", "/backbone/fpn/": "fpn", "/head/": "head"}
ORT_PARTS = ("trunk", "fpn", "head", "rest")
SIZE = 416  # generated images: the default input side
COLUMNS = ("params_m", "gflops", "trunk", "fpn", "head")


def compare_candidates(args, *, compose) -> None:
    """Build, count, export and time every candidate (see the module doc); prints markdown.
    ``compose(overrides)``: the composed conf/ as a plain dict."""
    torch.manual_seed(0)
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, instruction sets "
          f"{', '.join(info['instruction_sets'] or ['unknown'])}; {info['packages']}")  # fmt: skip
    configs = {name: compose(["model=fcos_mobilenet_v2", *o]) for name, o in CANDIDATES.items()}
    models = {name: _model(cfg, args.score_threshold) for name, cfg in configs.items()}
    images = _images(args.runs)
    rows = {name: _cost(model, torch.from_numpy(images[0])) for name, model in models.items()}
    with tempfile.TemporaryDirectory() as work:
        detectors = _detectors(models, configs, images[0], Path(work))
        print(f"timing {len(detectors)} detectors × {args.runs} images × {args.rounds} rounds …",
              flush=True)  # fmt: skip
        timed = time_in_rounds(detectors, list(images), rounds=args.rounds)
        by_part = {
            name: ort_time_by_part(Path(work) / f"candidate{index}.onnx", images)
            for index, name in enumerate(models)
        }
    for name, row in rows.items():
        row.update({key: timed[f"{name}|{key}"]["latency_ms_p50"] for key in _runtimes()})
        row.update({f"ort_{part}": ms for part, ms in by_part[name].items()})
    batch = int(configs["default"]["train"]["batch_size"])
    torch.set_num_threads(args.train_threads or os.cpu_count() or 1)
    rates = _train_rates(models, configs, batch=batch, steps=args.train_steps, rounds=args.rounds)
    for name, rate in rates.items():
        rows[name]["train_img_s"] = rate
    _print(rows, batch=batch, args=args)


def _model(cfg: dict, score_threshold: float) -> torch.nn.Module:
    config = {k: v for k, v in cfg["model"].items() if v != "auto" and k != "tiles"}
    model = build_model(**config, num_classes=2, score_threshold=score_threshold)
    return model.eval()


def _images(count: int) -> np.ndarray:
    """``[count, 3, 416, 416]`` float32 in 0..1: smooth blobs with noise, seeded."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(count, 3, SIZE // 16, SIZE // 16, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear")
    noise = torch.rand(count, 3, SIZE, SIZE, generator=generator) * 0.1
    return (smooth * 0.9 + noise).clamp(0, 1).numpy()


def _cost(model: torch.nn.Module, image: torch.Tensor) -> dict:
    """Parameters (M), GFLOPs per image at the model's input, and per part."""
    cost, split = model_cost(model, image), flops_by_part(model, image)["parts"]
    return {
        "input": "×".join(str(v) for v in cost["input_size"]),
        "params_m": cost["params"] / 1e6,
        "gflops": cost["gflops_per_image"],
        "trunk": split["backbone.body"],
        "fpn": split["backbone.fpn"],
        "head": split["head"],
    }


def ort_time_by_part(path: Path, images: np.ndarray, *, threads: int = 1) -> dict[str, float]:
    """ONNX Runtime's own profile of the graph at ``path`` on ``images`` (``[N, 3, H, W]``),
    one thread: milliseconds per image of the kernels of each part (:data:`NODE_PARTS`,
    after ORT's graph optimisations, whose fused nodes keep a member's name), the first
    (warm-up) run left out."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.profile_file_prefix = str(path.with_suffix("")) + "_profile"
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for image in images:
        session.run(None, {name: np.ascontiguousarray(image)})
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    warm_end = runs[0][1]
    totals = dict.fromkeys(ORT_PARTS, 0.0)
    for event in events:
        kernel = event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
        if kernel and event["ts"] >= warm_end:
            totals[_part(event["name"])] += event["dur"]
    return {part: us / 1000 / (len(runs) - 1) for part, us in totals.items()}


def _part(node: str) -> str:
    return next((part for key, part in NODE_PARTS.items() if key in node), "rest")


def _runtimes() -> list[str]:
    return [f"{kind}{threads}t" for kind in ("ort", "eager") for threads in THREADS]


def _detectors(models: dict, configs: dict, sample: np.ndarray, work: Path) -> dict:
    """``"{candidate}|{runtime}"`` → a callable on one ``[3, H, W]`` float32 image: ONNX
    Runtime FP32 on each exported graph, and PyTorch eager, on 1 and 2 threads."""
    detectors = {}
    for index, (name, model) in enumerate(models.items()):
        path = work / f"candidate{index}.onnx"
        export_onnx(model=model, onnx_path=path, sample=torch.from_numpy(sample),
                    class_names=["a", "b"], config=configs[name]["model"],
                    options=ExportOptions())  # fmt: skip
        for threads in THREADS:
            detectors[f"{name}|ort{threads}t"] = OnnxDetector(path, threads=threads)
            detectors[f"{name}|eager{threads}t"] = _eager(model, threads)
    return detectors


def _eager(model: torch.nn.Module, threads: int):
    def run(image: np.ndarray):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return model([torch.from_numpy(image)])

    return run


def _train_rates(models: dict, configs: dict, *, batch: int, steps: int, rounds: int) -> dict:
    """Training images/s per candidate: median over ``rounds`` of ``steps`` timed steps (after
    one untimed), the candidates in turn, the order reversed every other round."""
    images = [torch.from_numpy(image) for image in _images(batch)]
    targets = [_target(index) for index in range(batch)]
    runs = {name: _trainer(model, configs[name]["train"]) for name, model in models.items()}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(rounds):
        for name in list(runs) if index % 2 == 0 else list(runs)[::-1]:
            runs[name](images, targets)  # untimed: the first step after a switch is slower
            start = time.perf_counter()
            for _ in range(steps):
                runs[name](images, targets)
            rates[name].append(batch * steps / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def _target(index: int) -> dict:
    """Two boxes (``xyxy`` px of a 416×416 image), class 1 and 2."""
    shift = 20.0 * index
    boxes = torch.tensor([[30 + shift, 40, 180 + shift, 200], [220, 150 + shift, 400, 380]])
    return {"boxes": boxes, "labels": torch.tensor([1, 2])}


def _trainer(model: torch.nn.Module, train: dict):
    """One SGD step of a copy of ``model`` as detflow's loop takes it (train mode with the
    frozen trunk's norm fixed, its optimizer, channels-last per ``train.channels_last``)."""
    model = copy.deepcopy(model)
    if train.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, name=train["optimizer"], lr=train["lr"],
                                weight_decay=train["weight_decay"],
                                momentum=train["momentum"])  # fmt: skip
    train_mode(model)

    def step(images, targets):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _print(rows: dict, *, batch: int, args) -> None:
    keys = [*COLUMNS, *_runtimes(), *(f"ort_{p}" for p in ORT_PARTS), "train_img_s"]
    heads = ["params (M)", "GFLOPs", "trunk", "FPN", "head",
             *(f"{k[:-2].replace('ort', 'ORT')} {k[-2]} thr ms" for k in _runtimes()),
             *(f"ORT ms {p}" for p in ORT_PARTS),
             f"train img/s (batch {batch})"]  # fmt: skip
    print(f"\nlatency: p50 of {args.runs} images, median of {args.rounds} rounds; training: "
          f"{args.train_steps} steps per round on {args.train_threads or 'all'} threads; "
          f"score threshold {args.score_threshold}; ORT ms per part: ONNX Runtime's "
          f"profile, 1 thread, {args.runs} images (rest: resize, decode, NMS)\n")  # fmt: skip
    print("| candidate | input px | " + " | ".join(heads) + " |")
    print("|---|---|" + "---|" * len(heads))
    for name, row in rows.items():
        print(f"| {name} | {row['input']} | " + " | ".join(_figure(row[k]) for k in keys) + " |")
    print("\nratio to the default (lower is lighter/faster; train img/s: higher is faster)\n")
    print("| candidate | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(heads))
    base = rows["default"]
    for name, row in rows.items():
        ratios = [row[k] / base[k] if base[k] else float("nan") for k in keys]
        print(f"| {name} | " + " | ".join(f"{r:.2f}×" for r in ratios) + " |")


def _figure(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"
