"""The candidate table: detectors that train offline here, each run through the pipeline on
the bundled set with the default recipe, three seeds, then exported and optimized.

Data (collect → augment) is prepared once; each model (``model=<name>``) then trains and is
evaluated once per ``train.seed`` (as ``dvc exp run -S model=… -S train.seed=…`` would), and
its seed-0 checkpoint goes through export and optimize. Prints a markdown table: model, train
minutes per seed (wall time of the train stage, validation included) and train img/s, test
mAP50 and mAP50-95 per seed and mean ± sd, then from optimize's one side-by-side run on the
test split: ORT FP32 p50 latency, the best INT8 variant (the fastest within the budget, else
the fastest with its status) and its ratio to ORT FP32, OpenVINO FP32 and bf16, and what
optimize deploys.

Usage: python bench/candidate_table.py [--models NAME ...] [--seeds 0 1 2] [--work DIR]
       [--set NAME:KEY=VALUE ...] [OVERRIDE ...]
``--set`` gives one model an override (e.g. ``ssdlite_mobilenet_v2:train.epochs=14``);
OVERRIDEs apply to every run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("fasterrcnn_mobilenet_v2", "fcos_mobilenet_v2", "ssdlite_mobilenet_v2")
DATA_KEYS = ("raw", "clean", "split", "augmented")
RUN_KEYS = ("train", "export", "optimized", "deploy", "reports")
OPENVINO_FLOAT = ("openvino_fp32", "openvino_bf16")
FAILED = {"ort_fp32": None, "int8": None, **dict.fromkeys(OPENVINO_FLOAT)}


def run_stage(stage: str, data: Path, out: Path, overrides: list[str]) -> float:
    """``stages/<stage>.py`` with the data under ``data`` and every output under ``out``;
    returns its wall time in seconds."""
    paths = [f"paths.{k}={data / k}" for k in DATA_KEYS] + [
        f"paths.{k}={out / k}" for k in RUN_KEYS
    ]
    command = [sys.executable, str(REPO / "stages" / f"{stage}.py"), *paths, *overrides]
    start = time.perf_counter()
    subprocess.run([*command, f"hydra.run.dir={out}/hydra"], check=True, cwd=REPO)
    return time.perf_counter() - start


def train_seed(data: Path, out: Path, seed: int, overrides: list[str]) -> dict:
    """train + evaluate with ``train.seed``; minutes, train img/s and the test metrics."""
    seconds = run_stage("train", data, out, [f"train.seed={seed}", *overrides])
    run_stage("evaluate", data, out, [f"train.seed={seed}", *overrides])
    trained = json.loads((out / "reports" / "train" / "metrics.json").read_text())
    tested = json.loads((out / "reports" / "evaluate" / "metrics.json").read_text())
    return {
        "minutes": seconds / 60,
        "img_s": trained["train_images_per_s"],
        "map50": tested["map50"],
        "map50_95": tested["map50_95"],
    }


def deploy_figures(data: Path, out: Path, overrides: list[str]) -> dict:
    """export + optimize of ``out``'s checkpoint; latencies from optimize's benchmark."""
    for stage in ("export", "optimize"):
        run_stage(stage, data, out, overrides)
    table = json.loads((out / "reports" / "optimize" / "benchmark.json").read_text())
    measured = {k: v for k, v in table.items() if "latency_ms_p50" in v}
    int8 = sorted(
        (k for k in measured if "int8" in k),
        key=lambda k: (measured[k]["status"] != "ok", measured[k]["latency_ms_p50"]),
    )
    fp32 = measured["ort_fp32"]["latency_ms_p50"]
    best = int8[0] if int8 else None
    deployed = json.loads((out / "deploy" / "model_card.json").read_text())["variant"]
    return {
        "ort_fp32": fp32,
        "int8": best,
        "int8_ms": measured[best]["latency_ms_p50"] if best else None,
        "int8_status": measured[best]["status"] if best else "none measured",
        "int8_drop": measured[best]["map_drop"] if best else None,
        **{k: measured.get(k, {}).get("latency_ms_p50") for k in OPENVINO_FLOAT},
        "deployed": deployed,
    }


def row(name: str, seeds: list[dict], deployed: dict) -> str:
    def spread(key: str) -> str:
        values = [s[key] for s in seeds]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = " / ".join(f"{v:.3f}" for v in values)
        return f"{per_seed} (**{statistics.mean(values):.3f} ± {sd:.3f}**)"

    int8 = "—"
    if deployed["int8"]:
        ratio = deployed["ort_fp32"] / deployed["int8_ms"]
        status = "" if deployed["int8_status"] == "ok" else f", {deployed['int8_status']}"
        int8 = (
            f"{deployed['int8']} {deployed['int8_ms']:.1f} ms ({ratio:.2f}×, "
            f"{-deployed['int8_drop']:+.2f} points{status})"
        )
    openvino = " | ".join(f"{deployed[k]:.1f}" if deployed[k] else "—" for k in OPENVINO_FLOAT)
    minutes = " / ".join(f"{s['minutes']:.1f}" for s in seeds)
    fp32 = f"{deployed['ort_fp32']:.1f}" if deployed["ort_fp32"] else "—"
    return (
        f"| {name} | {minutes} "
        f"({statistics.median(s['img_s'] for s in seeds):.1f} img/s) | {spread('map50')} | "
        f"{spread('map50_95')} | {fp32} | {int8} | "
        f"{openvino} | {deployed['deployed']} |"
    )


def per_model(pairs: list[str]) -> dict[str, list[str]]:
    """``NAME:KEY=VALUE`` pairs as {name: [KEY=VALUE, …]}."""
    extra: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, override = pair.partition(":")
        if not sep or "=" not in override:
            raise SystemExit(f"--set {pair!r}: use NAME:KEY=VALUE")
        extra.setdefault(name, []).append(override)
    return extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work", type=Path, help="keep everything here")
    parser.add_argument("--set", nargs="*", default=[], dest="extra", metavar="NAME:KEY=VALUE")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    extra = per_model(args.extra)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        data = work / "data"
        for stage in ("collect", "clean", "split", "augment"):
            run_stage(stage, data, data, args.overrides)
        rows = []
        for name in args.models:
            overrides = [f"model={name}", *args.overrides, *extra.get(name, [])]
            seeds = []
            for seed in args.seeds:
                seeds.append(train_seed(data, work / name / f"seed{seed}", seed, overrides))
                print(f"{name} seed {seed}: {json.dumps(seeds[-1])}", flush=True)
            first = work / name / f"seed{args.seeds[0]}"
            try:
                figures = deploy_figures(data, first, [f"train.seed={args.seeds[0]}", *overrides])
            except subprocess.CalledProcessError as exc:  # e.g. export's parity check refused
                stage = Path(exc.cmd[1]).stem
                figures = {**FAILED, "deployed": f"{stage} failed (its log: {first}/hydra)"}
            print(f"{name} deploy: {json.dumps(figures)}", flush=True)
            rows.append(row(name, seeds, figures))
        print(f"\nseeds {args.seeds}; overrides {args.overrides or 'none'}; per model {extra}")
        print(
            "| model | train minutes per seed (img/s) | test mAP50 per seed (mean ± sd) | "
            "mAP50-95 (mean ± sd) | ORT FP32 ms | best INT8 (× ORT FP32, drop) | "
            "OpenVINO FP32 ms | OpenVINO bf16 ms | deployed |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
