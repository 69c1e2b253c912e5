"""Benchmark: sliced ``detflow predict`` on a large image, against the same model on the
whole image.

A tiny detector (the default ``fcos_mobilenet_v2``, ImageNet trunk, untrained head, input
``--tile`` px so a tile enters without resize) is exported once with tiles
(``detflow_tiles``: ``--tile`` px, ``--overlap`` px, NMS) and once more without them (the
same graph, the metadata taken out). On a generated 4000×3000 JPEG (and a 50-megapixel one,
sliced only), each model runs ``detflow predict`` (:func:`detflow.deploy.predict.
predict_source`) in a fresh child process on ``--runs`` copies of the image (the
50-megapixel one: at most 2), so each child's peak RSS is its own (``VmHWM`` of
/proc/self/status: ``ru_maxrss`` would carry the parent's peak across ``exec``). Printed
side by side: latency per full image (median of the copies after the first; the first
builds the batched graph), tiles per image and peak RSS, and the sliced / whole ratios.

With ``--serve``: the same two models behind a real ``detflow serve`` on 127.0.0.1 (one
server per model, a free port), the 4000×3000 JPEG posted ``--runs`` times to ``/v1/detect``
over a socket: latency per request as the client sees it (median after the first) and the
server process's peak RSS (``VmHWM``), side by side.

Needs the training stack (torch) for the export only; the children import no torch.

Usage: python bench/tiles_predict.py [--tile 416] [--overlap 40] [--runs 3] [--threads 0]
       [--no-50mp] [--serve]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = {"4000x3000": (4000, 3000), "50MP": (8192, 6144)}


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth gradient with 60 small bright and dark rectangles (8–40 px): JPEG-friendly."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = ((x + y) / 2).astype(np.uint8)
    image[..., 1] = x.astype(np.uint8)
    image[..., 2] = np.broadcast_to(y, (height, width)).astype(np.uint8)
    for _ in range(60):
        w, h = rng.integers(8, 41, 2)
        x0, y0 = rng.integers(0, width - w), rng.integers(0, height - h)
        image[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
    return Image.fromarray(image)


def _export(work: Path, *, tile: int, overlap: int) -> tuple[Path, Path]:
    """(ONNX with tiles, the same ONNX without ``detflow_tiles``)."""
    import onnx
    import torch

    from detflow.core.tile_settings import TileSettings
    from detflow.deploy.export import ExportOptions, export_onnx
    from detflow.model.build import build_model
    from detflow.model.postprocess_config import PostprocessOptions

    torch.manual_seed(0)
    model = build_model(
        name="fcos_mobilenet_v2",
        num_classes=2,
        backbone_weights="IMAGENET1K_V1",
        min_size=tile,
        max_size=tile,
    ).eval()
    postprocess = PostprocessOptions(
        score_threshold=0.05, nms_iou=0.5, max_detections=100
    )  # conf/config.yaml's postprocess.*
    sliced = work / "sliced.onnx"
    export_onnx(
        model=model,
        onnx_path=sliced,
        sample=torch.rand(3, tile, tile),
        class_names=["a", "b"],
        config={},
        options=ExportOptions(),
        postprocess=postprocess,
        tiles=TileSettings(tile, overlap),
    )
    proto = onnx.load(str(sliced))
    kept = [p for p in proto.metadata_props if p.key != "detflow_tiles"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    whole = work / "whole.onnx"
    onnx.save(proto, str(whole))
    return sliced, whole


def _child(model: str, folder: str, threads: int) -> None:
    """Run ``detflow predict`` on ``folder``; print latencies, tiles and this process's peak RSS."""
    from detflow.core.tile_grid import tile_windows
    from detflow.deploy.predict import predict_source
    from detflow.deploy.runtime import open_model

    out = Path(folder).parent / f"out-{Path(model).stem}-{Path(folder).name}"
    predict_source(
        model=model,
        source=folder,
        out_dir=out,
        threads=threads,
        save_visuals=False,
        progress=False,
    )
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    tiles = open_model(model).tiles
    counts = [
        len(tile_windows(r["width"], r["height"], size=tiles.size, overlap=tiles.overlap))
        if tiles
        else 1
        for r in records
    ]
    peak_mib = _peak_rss_mib()
    torch_loaded = any(m.split(".")[0] == "torch" for m in sys.modules)
    print(
        json.dumps(
            {
                "latency_ms": [r["latency_ms"] for r in records],
                "detections": [len(r["detections"]) for r in records],
                "tiles": counts,
                "peak_rss_mib": peak_mib,
                "torch_loaded": torch_loaded,
            }
        )
    )


def _peak_rss_mib(pid: int | str = "self") -> float:
    """Process ``pid``'s peak resident set size (``VmHWM``, reset by ``exec``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run_child(model: Path, folder: Path, threads: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(model), str(folder), "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve_run(model: Path, jpeg: Path, *, runs: int, threads: int) -> dict:
    """``detflow serve --model model`` on a free loopback port; ``jpeg`` posted ``runs`` times
    to ``/v1/detect``; the client-side latencies (ms), detections, the server's peak RSS."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "detflow.cli", "serve", "--model", str(model)]
    command += ["--port", str(port), "--threads", str(threads), "--max-upload-mb", "50"]
    command += ["--request-log", str(jpeg.parent / f"requests-{model.stem}.jsonl")]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(url, server)
        data, latency, detections = jpeg.read_bytes(), [], []
        for _ in range(runs):
            request = urllib.request.Request(
                f"{url}/v1/detect", data=data, headers={"content-type": "image/jpeg"}
            )
            start = time.perf_counter()
            with urllib.request.urlopen(request, timeout=600) as answer:
                body = json.loads(answer.read())
            latency.append((time.perf_counter() - start) * 1000)
            detections.append(len(body["detections"]))
        peak = _peak_rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)
    return {"latency_ms": latency, "detections": detections, "peak_rss_mib": peak}


def _wait_ready(url: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"detflow serve exited: {server.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"detflow serve not ready within {timeout_s:.0f} s")


def _serve_rows(work: Path, sliced: Path, whole: Path, args) -> None:
    """The 4000×3000 image through a real server, whole and sliced, side by side."""
    jpeg = work / "serve-4000x3000.jpg"
    _image(*SIZES["4000x3000"]).save(jpeg, quality=90)
    print("serve, 4000x3000 JPEG over 127.0.0.1 (client-side ms per request):")
    print(f"{'run':<24} {'ms/request':>10} {'first ms':>10} {'dets':>5} {'peak RSS MiB':>13}")
    results = {}
    for name, model in (("whole image", whole), ("sliced", sliced)):
        result = _serve_run(model, jpeg, runs=args.runs, threads=args.threads)
        warm = result["latency_ms"][1:] or result["latency_ms"]
        results[name] = (float(np.median(warm)), result["peak_rss_mib"])
        print(
            f"{name:<24} {results[name][0]:>10.1f} {result['latency_ms'][0]:>10.1f} "
            f"{int(np.median(result['detections'])):>5} {result['peak_rss_mib']:>13.0f}"
        )
    (ms_w, rss_w), (ms_s, rss_s) = results["whole image"], results["sliced"]
    print(f"serve sliced / whole: latency {ms_s / ms_w:.1f}x, peak RSS {rss_s / rss_w:.2f}x")


def _row(name: str, result: dict) -> tuple:
    warm = result["latency_ms"][1:] or result["latency_ms"]
    return (
        name,
        float(np.median(warm)),
        result["latency_ms"][0],
        result["tiles"][0],
        int(np.median(result["detections"])),
        result["peak_rss_mib"],
        result["torch_loaded"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile", type=int, default=416)
    parser.add_argument("--overlap", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3, help="copies of each image")
    parser.add_argument("--threads", type=int, default=0, help="ORT threads (0: all cores)")
    parser.add_argument("--no-50mp", action="store_true", help="skip the 50-megapixel image")
    parser.add_argument("--serve", action="store_true", help="also through detflow serve")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child, args.threads)
        return
    with tempfile.TemporaryDirectory(prefix="tiles-bench-") as tmp:
        work = Path(tmp)
        sliced, whole = _export(work, tile=args.tile, overlap=args.overlap)
        if args.serve:
            _serve_rows(work, sliced, whole, args)
        rows = []
        for label, (width, height) in SIZES.items():
            if label == "50MP" and args.no_50mp:
                continue
            folder = work / label
            folder.mkdir()
            image = _image(width, height)
            for copy in range(args.runs if label != "50MP" else min(args.runs, 2)):
                image.save(folder / f"{copy}.jpg", quality=90)
            del image
            if label != "50MP":
                rows.append(_row(f"{label} whole image", _run_child(whole, folder, args.threads)))
            rows.append(_row(f"{label} sliced", _run_child(sliced, folder, args.threads)))
    print(f"tile {args.tile} px, overlap {args.overlap} px, {args.runs} copies per image")
    print(
        f"{'run':<24} {'ms/image':>10} {'first ms':>10} {'tiles':>6} {'dets':>5} "
        f"{'peak RSS MiB':>13} {'torch':>6}"
    )
    for name, ms, first, tiles, dets, rss, torch_loaded in rows:
        print(
            f"{name:<24} {ms:>10.1f} {first:>10.1f} {tiles:>6} {dets:>5} {rss:>13.0f} "
            f"{str(torch_loaded):>6}"
        )
    base, cut = rows[0], rows[1]
    print(
        f"sliced / whole on 4000x3000: latency {cut[1] / base[1]:.1f}x, "
        f"peak RSS {cut[5] / base[5]:.2f}x, {cut[3]} tiles"
    )


if __name__ == "__main__":
    main()
