"""evaluate: COCO metrics, P/R/F1, confusion matrix, plots and PyTorch latency of the best
checkpoint on the test split, post-processed by the shared ``postprocess.*``."""

from pathlib import Path

from detflow.data.torch_dataset import DetectionDataset
from detflow.evaluate.inference import EvaluateOptions, evaluate
from detflow.evaluate.report import write_evaluation
from detflow.model.checkpoint_file import check_classes, resolve_postprocess
from detflow.model.postprocess_config import PostprocessOptions
from detflow.model.restore import load_checkpoint

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths = cfg["paths"]
    options = EvaluateOptions.from_config(cfg["evaluate"])
    postprocess = PostprocessOptions.from_config(cfg["postprocess"])
    model, state = load_checkpoint(Path(paths["train"]) / "best.pt", postprocess=postprocess)
    postprocess = resolve_postprocess(postprocess, state)  # auto: as trained
    test = DetectionDataset(Path(paths["split"]) / "test.json")
    check_classes(state["class_names"], test.class_names, where=test.json_path)
    evaluation = evaluate(model, test, postprocess=postprocess, options=options)
    write_evaluation(
        evaluation, root / paths["reports"] / "evaluate", dataset=test, options=options
    )
    metrics = evaluation.metrics
    keys = ("map50_95", "map50", "precision", "recall", "f1", "latency_ms_p50")
    return {**{k: round(metrics[k], 4) for k in keys}, "f1_best": metrics["f1_best"]}


if __name__ == "__main__":
    main()
