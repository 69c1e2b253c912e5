"""Benchmark: detflow serve under load on 127.0.0.1, against its runtime in one process.

Starts ``detflow serve`` (a subprocess, one model, no hot reload) twice per ``--sessions``
value (runtime sessions per model, the cores shared out among them): without batching
(``--max-batch 1 --max-wait-ms 0``) and with it (``--max-batch 8 --max-wait-ms 2``). For each
it sends ``--requests`` images (raw PNG/JPEG bodies, keep-alive clients) at each concurrency in
``--concurrency`` and prints p50/p95/p99 latency, throughput, errors, the server's own
inference time per image (the ``latency_ms`` it reports over the ``batch_size`` of the run
that served the request), the mean batch size a request was served in, and the share of wall
time its runtime session was busy, and the server's RSS before the first and after the
last request.
Before and after the table it measures the model's runtime alone (ONNX Runtime, or OpenVINO
for an IR): the same images, decoded beforehand, one after another in this process (the
single-process throughput the server is compared with: their mean). Clients run in this
process, on the same cores.

``--soak N``: then N requests at concurrency 8 (batching on) to one fresh server, its RSS
after every N/5 and the errors; ``--soak-size S`` runs the soak on a stand-in exported at S px
with 50 proposals (bounded time on a small CPU: memory growth is the server's, whatever the
model costs).

``--model`` defaults to ``models/deploy``; when that is missing (no ``dvc repro`` here) a
stand-in is exported: an untrained ``fasterrcnn_mobilenet_v2`` at ``--size`` px with ImageNet
backbone weights (same graph as the default model; needs torch, for the export only).

Usage: python bench/serve_load.py [--model models/deploy] [--images DIR] [--requests 300]
       [--concurrency 1 4 8 16] [--sessions 1 2] [--size 320]
       [--soak 10000 --soak-size 128]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from detflow.core.images import load_rgb
from detflow.deploy.runtime import detect, model_file, model_threshold, open_model

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "data" / "sources" / "thermal_dogs_people" / "test" / "images"


def stand_in_model(out: Path, size: int, images: list[Path], proposals: int = 300) -> Path:
    import torch

    from detflow.data.torch_dataset import image_to_tensor
    from detflow.deploy.export import ExportOptions, export_verified
    from detflow.model.build import build_model

    torch.manual_seed(0)
    model = build_model(
        name="fasterrcnn_mobilenet_v2",
        num_classes=2,
        backbone_weights="IMAGENET1K_V1",
        min_size=size,
        max_size=size,
        score_threshold=0.05,
        max_detections=100,
        test_proposals=proposals,
    ).eval()
    export_verified(
        model=model,
        onnx_path=out,
        images=[image_to_tensor(load_rgb(p)) for p in images[:2]],
        names=[p.name for p in images[:2]],
        class_names=["dog", "person"],
        config={},
        options=ExportOptions(opset=17, parity_images=2),
    )
    return out


def runtime_throughput(model: Path, images: list[Path], count: int) -> tuple[float, float]:
    """(images per second, CPU ms per image) of the model's runtime alone, one image per call."""
    detector = open_model(model)
    arrays = [np.asarray(load_rgb(p)) for p in images]
    threshold = model_threshold(detector, None)
    detect(detector, arrays[0], threshold)
    start, cpu = time.perf_counter(), time.process_time()
    for index in range(count):
        detect(detector, arrays[index % len(arrays)], threshold)
    return count / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / count


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model: Path, args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "detflow.cli", "serve", "--model", str(model)]
    command += ["--port", str(port), "--reload-interval-s", "0", "--request-log", str(log)]
    command += ["--queue-size", "256", *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not become ready")


def load(
    url: str, bodies: list[tuple[bytes, str]], requests: int, concurrency: int, pid: int = 0
) -> dict:
    """``requests`` detect calls from ``concurrency`` clients; ``pid``: the server's, for its
    CPU time per request (0: not measured)."""
    latencies, inference, sizes, errors, lock = [], [], [], [0], threading.Lock()
    counter = iter(range(requests))

    def client():
        with httpx.Client(base_url=url, timeout=120) as session:
            for index in counter:
                data, kind = bodies[index % len(bodies)]
                start = time.perf_counter()
                try:
                    response = session.post(
                        "/v1/detect", content=data, headers={"content-type": kind}
                    )
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies.append(elapsed)
                        body = response.json()  # a run of batch_size images: its share
                        inference.append(body["latency_ms"] / 1000 / body["batch_size"])
                        sizes.append(body["batch_size"])
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    server_cpu, client_cpu = cpu_s(pid) if pid else 0.0, time.process_time()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    client_cpu = time.process_time() - client_cpu
    server_cpu = cpu_s(pid) - server_cpu if pid else float("nan")
    p50, p95, p99 = (np.percentile(latencies, q) * 1000 for q in (50, 95, 99))
    return {
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "rps": len(latencies) / wall,
        "errors": errors[0],
        "infer_ms": 1000 * float(np.mean(inference)),
        "batch": float(np.mean(sizes)),
        "busy": sum(inference) / wall,
        "server_cpu_ms": 1000 * server_cpu / requests,
        "client_cpu_ms": 1000 * client_cpu / requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "deploy"))
    parser.add_argument("--images", default=str(IMAGES))
    parser.add_argument("--requests", type=int, default=300, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--size", type=int, default=320, help="stand-in model's input size")
    parser.add_argument(
        "--soak", type=int, default=0, help="then N requests at concurrency 8, RSS every N/5"
    )
    parser.add_argument("--soak-size", type=int, help="soak on a stand-in of this size (px)")
    parser.add_argument(
        "--skip-table", action="store_true", help="only the runtime-alone figure and soak"
    )
    parser.add_argument(
        "--sessions", type=int, nargs="+", default=[1], help="serve.sessions values to compare"
    )
    args = parser.parse_args()
    images = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".jpg", ".png"))
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    model = Path(args.model)
    if not model_file(model).is_file():  # models/deploy holds model.onnx or model.xml
        print(f"{model}: missing; exporting a stand-in (untrained, {args.size} px)")
        model = stand_in_model(tmp / "model.onnx", args.size, images)
    print(f"model: {model_file(model)}")
    kinds = {".jpg": "image/jpeg", ".png": "image/png"}
    bodies = [(p.read_bytes(), kinds[p.suffix.lower()]) for p in images]
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    baseline = [runtime_throughput(model, images, min(args.requests, 200))]
    print(f"{len(images)} images; the runtime alone, one process: {baseline[0][0]:.1f} img/s\n")
    rows, memory = [], []
    servers = [
        (f"{label}, {n} session{'s' if n > 1 else ''}", [*flags, "--sessions", str(n)])
        for n in args.sessions
        for label, flags in (
            ("off (max_batch 1)", ["--max-batch", "1", "--max-wait-ms", "0"]),
            ("on (max_batch 8, 2 ms)", ["--max-batch", "8", "--max-wait-ms", "2"]),
        )
    ]
    for index, (label, flags) in enumerate([] if args.skip_table else servers):
        process, url = start_server(model, flags, tmp / f"server{index}.jsonl")
        try:
            load(url, bodies, 20, 2)  # warm-up
            before, total = rss_mb(process.pid), 0
            for concurrency in args.concurrency:
                rows.append(
                    (label, concurrency, load(url, bodies, args.requests, concurrency, process.pid))
                )
                total += args.requests
                print(f"  {label}, concurrency {concurrency}: {rows[-1][2]}", flush=True)
            memory.append((label, total, before, rss_mb(process.pid)))
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(30)
    baseline.append(runtime_throughput(model, images, min(args.requests, 200)))
    base = (baseline[0][0] + baseline[1][0]) / 2
    print(
        f"\nThe runtime alone: {baseline[0][0]:.2f} img/s before the table, "
        f"{baseline[1][0]:.2f} after (mean {base:.2f}; {1000 / base:.0f} ms per image, "
        f"{(baseline[0][1] + baseline[1][1]) / 2:.0f} CPU ms per image)\n"
    )
    print_table(rows, base)
    print()
    for label, total, before, after in memory:
        print(
            f"batching {label}: RSS {before:.0f} MB before, {after:.0f} MB after "
            f"{total} requests ({after - before:+.0f} MB)"
        )
    if args.soak:
        if args.soak_size:
            print(f"\nsoak model: a stand-in exported at {args.soak_size} px")
            model = stand_in_model(tmp / "soak.onnx", args.soak_size, images, proposals=50)
        soak(model, bodies, args.soak, tmp, sessions=max(args.sessions))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def print_table(rows: list, base: float) -> None:
    """The markdown table; ``base``: the model's runtime alone, img/s."""
    print(
        "| batching | concurrency | p50 ms | p95 ms | p99 ms | req/s | × runtime alone "
        "| server inference ms/img | mean batch | session busy | server CPU ms/req "
        "| client CPU ms/req | errors |"
    )
    print("|---" * 13 + "|")
    for label, concurrency, r in rows:
        print(
            f"| {label} | {concurrency} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} "
            f"| {r['rps']:.2f} | {r['rps'] / base:.2f} | {r['infer_ms']:.0f} "
            f"| {r['batch']:.1f} | {100 * r['busy']:.0f} % | {r['server_cpu_ms']:.0f} "
            f"| {r['client_cpu_ms']:.0f} | {r['errors']} |"
        )


def soak(model: Path, bodies: list, requests: int, tmp: Path, sessions: int = 1) -> None:
    """RSS of one server (batching on, ``sessions`` sessions, concurrency 8) over ``requests``
    requests, in five steps."""
    flags = ["--max-batch", "8", "--sessions", str(sessions)]
    process, url = start_server(model, flags, tmp / "soak.jsonl")
    try:
        load(url, bodies, 20, 2)
        points, errors, step = [(0, rss_mb(process.pid))], 0, max(requests // 5, 1)
        start = time.perf_counter()
        for done in range(step, requests + 1, step):
            errors += load(url, bodies, step, 8)["errors"]
            points.append((done, rss_mb(process.pid)))
            print(
                f"  soak: {done} requests, RSS {points[-1][1]:.0f} MB, {errors} errors", flush=True
            )
        print(
            f"soak, batching on, {sessions} session(s), concurrency 8: {points[-1][0]} requests in "
            f"{time.perf_counter() - start:.0f} s, {errors} errors; RSS MB after N requests:"
        )
        print(", ".join(f"{n}: {mb:.0f}" for n, mb in points))
        print(f"RSS growth: {points[-1][1] - points[0][1]:+.1f} MB")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)


if __name__ == "__main__":
    main()
