"""optimize: variants (optimize.*) of the export benchmarked on the test split; the fastest
within the accuracy budget is deployed with its model card and the reference distributions
`detflow serve` measures drift against (reference.json, from the test split)."""

from pathlib import Path

from detflow.core.files import read_json, write_json
from detflow.data.torch_dataset import DetectionDataset
from detflow.deploy.benchmark import (
    build_and_benchmark,
    fastest_accepted,
    latency_points,
    markdown_table,
)
from detflow.deploy.publish import deploy, source_commit
from detflow.deploy.reference import write_reference
from detflow.deploy.runtime import open_model
from detflow.deploy.variants import OptimizeOptions

from _app import log, stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths = cfg["paths"]
    test = DetectionDataset(Path(paths["split"]) / "test.json")
    variants, table = build_and_benchmark(
        onnx_path=Path(paths["export"]) / "model.onnx",
        out_dir=root / paths["optimized"],
        val=DetectionDataset(Path(paths["split"]) / "val.json"),
        test=test,
        options=OptimizeOptions.from_config(cfg["optimize"]),
    )
    reports = root / paths["reports"] / "optimize"
    write_json(reports / "benchmark.json", table)
    write_json(reports / "latency.json", latency_points(table))
    log.info("benchmark on the test split:\n%s", markdown_table(table))
    best = fastest_accepted(table)
    evaluated = root / paths["reports"] / "evaluate" / "metrics.json"
    deploy(
        variant=best,
        model_path=next(v.path for v in variants if v.name == best),
        row=table[best],
        out_dir=root / paths["deploy"],
        commit=source_commit(),
        cost=read_json(evaluated).get("cost") if evaluated.is_file() else None,
    )
    deployed = root / paths["deploy"]
    write_reference(
        detector=open_model(deployed),
        image_paths=[test.image_path(index) for index in range(len(test))],
        out_path=deployed / "reference.json",
    )
    return {"deployed": best, **{name: row["status"] for name, row in table.items()}}


if __name__ == "__main__":
    main()
