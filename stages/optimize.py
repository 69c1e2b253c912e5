"""optimize: variants (optimize.*) of the export benchmarked on the test split; the fastest
within the accuracy budget is deployed with its model card."""

from pathlib import Path

from detflow.benchmark import (
    apply_budget,
    benchmark,
    fastest_accepted,
    latency_points,
    markdown_table,
)
from detflow.datasets import DetectionDataset
from detflow.deploy import deploy, source_commit
from detflow.files import write_json
from detflow.optimize import build_variants
from detflow.quantize import calibration_images

from _app import log, stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths, options = cfg["paths"], cfg["optimize"]
    val = DetectionDataset(Path(paths["split"]) / "val.json")
    variants = build_variants(
        onnx_path=Path(paths["export"]) / "model.onnx",
        out_dir=root / paths["optimized"],
        variants=options["variants"],
        calibration=calibration_images(val, options["calibration_images"]),
        calibration_method=options["calibration_method"],
        per_channel=options["per_channel"],
        reduce_range=options["reduce_range"],
        quantize_op_types=options["quantize_op_types"],
        exclude_nodes=options["exclude_nodes"],
    )
    test = DetectionDataset(Path(paths["split"]) / "test.json")
    table = benchmark(variants=variants, dataset=test, warmup_runs=options["warmup_runs"])
    table = apply_budget(table, max_map_drop=options["max_map_drop"])
    reports = root / paths["reports"] / "optimize"
    write_json(reports / "benchmark.json", table)
    write_json(reports / "latency.json", latency_points(table))
    log.info("benchmark on the test split:\n%s", markdown_table(table))
    best = fastest_accepted(table)
    deploy(
        variant=best,
        model_path=next(v.path for v in variants if v.name == best),
        row=table[best],
        out_dir=root / paths["deploy"],
        commit=source_commit(),
    )
    return {"deployed": best, **{name: row["status"] for name, row in table.items()}}


if __name__ == "__main__":
    main()
