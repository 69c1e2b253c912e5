"""evaluate: COCO metrics, P/R/F1, confusion matrix, plots and PyTorch latency of the best
checkpoint on the test split (sliced when the checkpoint has ``tiles``), post-processed by the
shared ``postprocess.*``; then bootstrap CIs, the TIDE error breakdown, label-issue
candidates on val + test and the model's cost."""

from pathlib import Path

from detflow.data.torch_dataset import DetectionDataset
from detflow.evaluate.inference import EvaluateOptions, evaluate
from detflow.evaluate.insight import analyse
from detflow.evaluate.report import write_evaluation
from detflow.model.checkpoint_file import check_classes, resolve_postprocess, stored_tiles
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
    val = DetectionDataset(Path(paths["split"]) / "val.json")
    for split in (test, val):
        check_classes(state["class_names"], split.class_names, where=split.json_path)
    tiles = stored_tiles(state)  # None: whole images
    evaluation = evaluate(model, test, postprocess=postprocess, options=options, tiles=tiles)
    insight = analyse(
        model,
        evaluation,
        test=test,
        val=val,
        postprocess=postprocess,
        options=options,
        tiles=tiles,
    )
    out = root / paths["reports"] / "evaluate"
    write_evaluation(evaluation, out, dataset=test, options=options, insight=insight)
    metrics = {**evaluation.metrics, **insight.metrics}
    keys = ("map50_95", "map50", "precision", "recall", "f1", "latency_ms_p50")
    return {
        **{k: round(metrics[k], 4) for k in keys},
        **{k: metrics.get(k) for k in ("map50_ci", "map50_95_ci")},
        "f1_best": metrics["f1_best"],
        "errors": metrics["errors"]["overall"],
        "cost": metrics["cost"],
    }


if __name__ == "__main__":
    main()
