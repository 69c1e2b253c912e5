"""export: best checkpoint → ONNX (pre/post-processing inside), gated by ORT/PyTorch parity."""

from pathlib import Path

from detflow.checkpoints import load_checkpoint
from detflow.datasets import DetectionDataset
from detflow.export import export_verified, parity_image_count
from detflow.files import write_json

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths, options = cfg["paths"], cfg["export"]
    model, state = load_checkpoint(Path(paths["train"]) / "best.pt", postprocess=cfg["postprocess"])
    test = DetectionDataset(Path(paths["split"]) / "test.json")
    count = parity_image_count(options["parity_images"], len(test))
    (root / paths["export"]).mkdir(parents=True, exist_ok=True)
    report = export_verified(
        model=model,
        onnx_path=root / paths["export"] / "model.onnx",
        images=[test[i][0] for i in range(count)],
        names=[test.images[i]["source"] for i in range(count)],
        class_names=state["class_names"],
        config=state["config"],
        opset=options["opset"],
        max_box_error_px=options["max_box_error_px"],
        max_score_error=options["max_score_error"],
        postprocess=cfg["postprocess"],
        simplify=options["simplify"],
    )
    write_json(root / paths["reports"] / "export.json", report)
    return report


if __name__ == "__main__":
    main()
