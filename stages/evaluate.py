"""evaluate: COCO metrics, P/R/F1, confusion matrix, plots and PyTorch latency of the best
checkpoint on the test split, post-processed by the shared ``postprocess.*``."""

from pathlib import Path

from detflow.checkpoints import check_classes, load_checkpoint
from detflow.datasets import DetectionDataset
from detflow.inference import evaluate
from detflow.plots import write_evaluation

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths, options, postprocess = cfg["paths"], cfg["evaluate"], cfg["postprocess"]
    model, state = load_checkpoint(Path(paths["train"]) / "best.pt", postprocess=postprocess)
    test = DetectionDataset(Path(paths["split"]) / "test.json")
    check_classes(state["class_names"], test.class_names, where=test.json_path)
    evaluation = evaluate(
        model,
        test,
        postprocess=postprocess,
        score_threshold=options["score_threshold"],
        iou=options["iou"],
    )
    write_evaluation(
        evaluation,
        root / paths["reports"] / "evaluate",
        dataset=test,
        score_threshold=options["score_threshold"],
        preview_images=options["preview_images"],
        preview_columns=options["preview_columns"],
    )
    metrics = evaluation.metrics
    keys = ("map50_95", "map50", "precision", "recall", "f1", "latency_ms_p50")
    return {**{k: round(metrics[k], 4) for k in keys}, "f1_best": metrics["f1_best"]}


if __name__ == "__main__":
    main()
