"""The optimize benchmark: every variant on the same images in one process, the accuracy
budget against ``ort_fp32``, and the table, plot points and markdown that report it.

A row (one per variant, in build order) holds ``status``: ``ok``, ``skipped: <reason>``
(not built or not runnable here) or ``rejected: <reason>`` (over the accuracy budget, or it
crashed its runtime on one of the probe inputs of :mod:`detflow.deploy.crash_probe`); a
variant that ran also holds ``size_mb``, ``val_map50_95``, ``val_map50`` (COCO, val split,
after the post-processing in the model's metadata), ``map_drop`` (val mAP50-95 points lost
against ``ort_fp32``), ``latency_ms_p50|p95`` (batch 1, one val image per call),
``throughput_img_s`` (val images per second of inference, one after another) and
``provider`` (the ORT execution provider, or OpenVINO's device, that ran it). With
``optimize.latency_rounds`` > 0 the latency and throughput come from that many rounds timing
every variant side by side (:mod:`detflow.deploy.latency_rounds`; ``latency_rounds`` in the
row), else from the accuracy pass, one variant after another.

The test split is read only to report: each variant that ran also gets ``test_map50_95``,
``test_map50`` and ``test_map_drop``, measured after everything above; no status, and so
not the deployed variant, depends on them (calibration images come from train).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from detflow.core.errors import DetflowError
from detflow.deploy.crash_probe import crash_reason
from detflow.deploy.detectors import load_detector, model_bytes
from detflow.deploy.latency_rounds import time_in_rounds
from detflow.deploy.quantize import calibration_images
from detflow.deploy.variants import OptimizeOptions, Variant, build_variants
from detflow.evaluate.metrics import evaluate_predictor
from detflow.model.checkpoint_file import check_classes

REFERENCE = "ort_fp32"


def build_and_benchmark(
    *, onnx_path: str | Path, out_dir: str | Path, train, val, test, options: OptimizeOptions
) -> tuple[list[Variant], dict[str, dict]]:
    """The optimize stage's work: build ``options.variants`` of ``onnx_path`` into ``out_dir``
    (static INT8 calibrated on the first ``options.calibration_images`` of ``train``),
    benchmark them on ``val`` and judge them by ``options.max_map_drop`` (:func:`apply_budget`),
    then add each one's ``test`` figures for the report (:func:`add_test_figures`).
    ``train``, ``val``, ``test``: DetectionDatasets. Returns (the variants, the table)."""
    variants = build_variants(
        onnx_path=onnx_path,
        out_dir=out_dir,
        calibration=calibration_images(train, options.calibration_images),
        options=options,
    )
    table = benchmark(
        variants=variants,
        dataset=val,
        warmup_runs=options.warmup_runs,
        latency_rounds=options.latency_rounds,
    )
    table = apply_budget(table, max_map_drop=options.max_map_drop)
    return variants, add_test_figures(table, variants=variants, test=test)


def add_test_figures(table: dict[str, dict], *, variants: list[Variant], test) -> dict:
    """A copy of ``table`` where each variant that ran also holds ``test_map50_95``,
    ``test_map50`` and ``test_map_drop`` (against ``ort_fp32``) on ``test`` (a
    DetectionDataset): figures to report beside the val ones, never to decide on."""
    out = {name: dict(row) for name, row in table.items()}
    for variant in variants:
        if "val_map50_95" not in out[variant.name]:
            continue
        detector = load_detector(variant.path, providers=variant.providers)
        metrics = evaluate_predictor(partial(_run_on_tensor, detector), test)
        out[variant.name]["test_map50_95"] = metrics["map50_95"]
        out[variant.name]["test_map50"] = metrics["map50"]
    reference = out.get(REFERENCE, {}).get("test_map50_95")
    for row in out.values():
        if reference is not None and "test_map50_95" in row:
            row["test_map_drop"] = round(100 * (reference - row["test_map50_95"]), 4)
    return out


def benchmark(
    *, variants: list[Variant], dataset, warmup_runs: int = 2, latency_rounds: int = 0
) -> dict[str, dict]:
    """Run each variant over ``dataset`` (a DetectionDataset); returns name → row (see the
    module doc for ``latency_rounds``)."""
    if len(dataset) == 0:
        raise DetflowError(
            f"optimize: {dataset.json_path} is empty; nothing to benchmark on (add images)"
        )
    table, ran = {}, {}
    for variant in variants:
        if variant.skipped is not None:
            table[variant.name] = {"status": f"skipped: {variant.skipped}"}
            continue
        crashed = on_cpu(variant) and crash_reason(variant.path, providers=variant.providers)
        if crashed:  # never deployed: it would take the server down (deploy/crash_probe.py)
            table[variant.name] = {"status": f"rejected: {crashed}"}
            continue
        try:
            detector = load_detector(variant.path, providers=variant.providers)
        except DetflowError as exc:  # e.g. a provider without kernels for the variant's ops
            table[variant.name] = {"status": f"skipped: {exc}"}
            continue
        check_classes(detector.class_names, dataset.class_names, where=dataset.json_path)
        first = dataset[0][0].numpy()
        try:  # the first runs are where a provider fails (e.g. TensorRT builds its engine)
            for _ in range(max(warmup_runs, 1)):
                detector(first)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            table[variant.name] = {"status": f"skipped: {detector.provider} cannot run it: {exc}"}
            continue
        table[variant.name] = _measure(detector, dataset)
        ran[variant.name] = detector
    if latency_rounds and ran:
        images = [dataset[index][0].numpy() for index in range(len(dataset))]
        for name, timing in time_in_rounds(ran, images, rounds=latency_rounds).items():
            table[name].update(timing)
    return table


def on_cpu(variant: Variant) -> bool:
    """Probed for crashes: the CPU variants (ORT's CPU provider, OpenVINO). TensorRT would
    build an engine per probe size, minutes each, so its variants are not probed."""
    return all(_name(p) == "CPUExecutionProvider" for p in variant.providers)


def _name(provider) -> str:
    return provider[0] if isinstance(provider, tuple | list) else str(provider)


def _measure(detector, dataset) -> dict:
    seconds = []

    def predict_one(image):
        start = time.perf_counter()
        out = detector(image.numpy())
        seconds.append(time.perf_counter() - start)
        return out

    metrics = evaluate_predictor(predict_one, dataset)
    return {
        "status": "ok",
        "size_mb": round(model_bytes(detector.path) / 1e6, 3),
        "val_map50_95": metrics["map50_95"],
        "val_map50": metrics["map50"],
        "latency_ms_p50": metrics["latency_ms_p50"],
        "latency_ms_p95": metrics["latency_ms_p95"],
        "throughput_img_s": len(seconds) / sum(seconds),
        "provider": detector.provider,
    }


def _run_on_tensor(detector, image):
    return detector(image.numpy())


def apply_budget(table: dict[str, dict], *, max_map_drop: float) -> dict[str, dict]:
    """A copy of ``table`` where each variant that ran gets ``map_drop`` (val mAP50-95 points
    lost against ``ort_fp32``) and, above ``max_map_drop``, the status ``rejected: …``."""
    reference = table.get(REFERENCE, {})
    if reference.get("status") != "ok":
        raise DetflowError(
            f"optimize: the accuracy budget needs {REFERENCE} benchmarked (status "
            f"{reference.get('status', 'not in optimize.variants')}); add it to optimize.variants"
        )
    out = {}
    for name, row in table.items():
        row = dict(row)
        if "val_map50_95" in row:
            row["map_drop"] = round(100 * (reference["val_map50_95"] - row["val_map50_95"]), 4)
            if row["map_drop"] > max_map_drop:
                row["status"] = (
                    f"rejected: loses {row['map_drop']:.2f} val mAP50-95 points vs {REFERENCE} "
                    f"(optimize.max_map_drop={max_map_drop})"
                )
        out[name] = row
    return out


def fastest_accepted(table: dict[str, dict]) -> str:
    """The accepted (status ok) variant with the lowest p50 latency."""
    accepted = [name for name, row in table.items() if row["status"] == "ok"]
    if not accepted:
        statuses = "; ".join(f"{n}: {r['status']}" for n, r in table.items())
        raise DetflowError(f"optimize: no variant to deploy ({statuses})")
    return min(accepted, key=lambda name: table[name]["latency_ms_p50"])


def latency_points(table: dict[str, dict]) -> list[dict]:
    """``{variant, p50_ms}`` of each variant that ran: the DVC bar plot's data."""
    return [
        {"variant": name, "p50_ms": round(row["latency_ms_p50"], 3)}
        for name, row in table.items()
        if "latency_ms_p50" in row
    ]


def markdown_table(table: dict[str, dict]) -> str:
    """The benchmark as a markdown table, one row per variant: val figures (the decision),
    then test figures (the report)."""
    rows = [
        "| variant | size MB | val mAP50-95 | val mAP50 | test mAP50-95 | test mAP50 | p50 ms "
        "| p95 ms | img/s | provider | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in table.items():
        if "val_map50_95" not in r:
            rows.append(f"| {name} | | | | | | | | | | {r['status']} |")
            continue
        test = " | ".join(_figure(r.get(k)) for k in ("test_map50_95", "test_map50"))
        rows.append(
            f"| {name} | {r['size_mb']:.1f} | {r['val_map50_95']:.3f} | {r['val_map50']:.3f} "
            f"| {test} | {r['latency_ms_p50']:.1f} | {r['latency_ms_p95']:.1f} "
            f"| {r['throughput_img_s']:.1f} | {r['provider']} | {r['status']} |"
        )
    return "\n".join(rows)


def _figure(value) -> str:
    return "" if value is None else f"{value:.3f}"
