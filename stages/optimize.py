"""optimize: variants (optimize.*) of the export, built (INT8 calibrated on train images) and
benchmarked on the val split, which accepts or rejects them and picks the fastest within the
accuracy budget; each one's test figures are reported beside. The deployed variant gets its
model card (with this machine's instruction sets and runtime versions) and the reference
distributions `detflow serve` measures drift against (reference.json, from train + val)."""

from pathlib import Path

from detflow.core.files import read_json, write_json
from detflow.core.machine import machine_info
from detflow.data.torch_dataset import DetectionDataset
from detflow.deploy import benchmark
from detflow.deploy.publish import deploy, source_commit
from detflow.deploy.reference import write_reference
from detflow.deploy.runtime import open_model
from detflow.deploy.variants import OptimizeOptions

from _app import log, stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths = cfg["paths"]
    train, val, test = (
        DetectionDataset(Path(paths["split"]) / f"{name}.json") for name in ("train", "val", "test")
    )
    variants, table = benchmark.build_and_benchmark(
        onnx_path=Path(paths["export"]) / "model.onnx",
        out_dir=root / paths["optimized"],
        train=train,
        val=val,
        test=test,
        options=OptimizeOptions.from_config(cfg["optimize"]),
    )
    machine, reports = machine_info(), root / paths["reports"] / "optimize"
    write_json(reports / "benchmark.json", {**table, "machine": machine})
    write_json(reports / "latency.json", benchmark.latency_points(table))
    log.info("decided on val, test beside:\n%s", benchmark.markdown_table(table))
    best, deployed = benchmark.fastest_accepted(table), root / paths["deploy"]
    evaluated = root / paths["reports"] / "evaluate" / "metrics.json"
    deploy(
        variant=best,
        model_path=next(v.path for v in variants if v.name == best),
        row=table[best],
        out_dir=deployed,
        commit=source_commit(),
        cost=read_json(evaluated).get("cost") if evaluated.is_file() else None,
        machine=machine,
    )
    write_reference(
        detector=open_model(deployed),
        image_paths=[d.image_path(index) for d in (train, val) for index in range(len(d))],
        out_path=deployed / "reference.json",
    )
    return {"deployed": best, **{name: row["status"] for name, row in table.items()}}


if __name__ == "__main__":
    main()
