"""optimize: ONNX Runtime variants (optimize.*) of the export, benchmarked on the test split."""

from pathlib import Path

from detflow.datasets import DetectionDataset
from detflow.files import write_json
from detflow.optimize import benchmark, build_variants, markdown_table

from _app import log, stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths, options = cfg["paths"], cfg["optimize"]
    val = DetectionDataset(Path(paths["split"]) / "val.json")
    count = min(options["calibration_images"], len(val))
    models = build_variants(
        onnx_path=Path(paths["export"]) / "model.onnx",
        out_dir=root / paths["optimized"],
        variants=options["variants"],
        calibration=[val[i][0].numpy() for i in range(count)],
        per_channel=options["per_channel"],
        reduce_range=options["reduce_range"],
    )
    table = benchmark(
        models=models,
        dataset=DetectionDataset(Path(paths["split"]) / "test.json"),
        warmup_runs=options["warmup_runs"],
    )
    write_json(root / paths["reports"] / "optimize" / "benchmark.json", table)
    log.info("benchmark on the test split:\n%s", markdown_table(table))
    return {name: row["latency_ms_p50"] for name, row in table.items()}


if __name__ == "__main__":
    main()
