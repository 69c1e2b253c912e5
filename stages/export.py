"""export: best checkpoint → ONNX (pre/post-processing inside), gated by ORT/PyTorch parity on
val images (the test split is not read)."""

from pathlib import Path

from detflow.core.files import write_json
from detflow.data.torch_dataset import DetectionDataset
from detflow.deploy.export import ExportOptions, export_verified, parity_count
from detflow.model.checkpoint_file import resolve_postprocess
from detflow.model.postprocess_config import PostprocessOptions
from detflow.model.restore import load_checkpoint

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths = cfg["paths"]
    options = ExportOptions.from_config(cfg["export"])
    postprocess = PostprocessOptions.from_config(cfg["postprocess"])
    model, state = load_checkpoint(Path(paths["train"]) / "best.pt", postprocess=postprocess)
    postprocess = resolve_postprocess(postprocess, state)  # auto: as trained
    val = DetectionDataset(Path(paths["split"]) / "val.json")
    count = parity_count(options, len(val))
    (root / paths["export"]).mkdir(parents=True, exist_ok=True)
    report = export_verified(
        model=model,
        onnx_path=root / paths["export"] / "model.onnx",
        images=[val[i][0] for i in range(count)],
        names=[val.images[i]["source"] for i in range(count)],
        class_names=state["class_names"],
        config=state["config"],
        options=options,
        postprocess=postprocess,
    )
    write_json(root / paths["reports"] / "export.json", report)
    return report


if __name__ == "__main__":
    main()
