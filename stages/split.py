"""split: seeded, group-aware, stratified train/val/test split of paths.clean (split.*)."""

from pathlib import Path

from detflow.core.files import write_json
from detflow.data.split import SplitOptions, split_dataset

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths = cfg["paths"]
    report = split_dataset(
        in_json=Path(paths["clean"]) / "dataset.json",
        out_dir=root / paths["split"],
        options=SplitOptions.from_config(cfg["split"]),
    )
    write_json(root / paths["reports"] / "split.json", report)
    summary = {name: report[name]["images"] for name in ("train", "val", "test")}
    return {**summary, "max_class_share_deviation_pp": report["max_class_share_deviation_pp"]}


if __name__ == "__main__":
    main()
