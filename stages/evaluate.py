"""evaluate: COCO metrics and PyTorch latency of the best checkpoint on the test split."""

from pathlib import Path

from detflow.checkpoints import load_checkpoint
from detflow.datasets import DetectionDataset
from detflow.files import write_json
from detflow.inference import evaluate_model

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths = cfg["paths"]
    model, _ = load_checkpoint(Path(paths["train"]) / "best.pt", postprocess=cfg["postprocess"])
    metrics = evaluate_model(model, DetectionDataset(Path(paths["split"]) / "test.json"))
    write_json(root / paths["reports"] / "evaluate" / "metrics.json", metrics)
    return {k: round(metrics[k], 4) for k in ("map50_95", "map50", "latency_ms_p50")}


if __name__ == "__main__":
    main()
