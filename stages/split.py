"""split: seeded, group-aware, stratified train/val/test split of paths.clean (split.*)."""

from pathlib import Path

from detflow.files import write_json
from detflow.split import split_dataset

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths, options = cfg["paths"], cfg["split"]
    report = split_dataset(
        in_json=Path(paths["clean"]) / "dataset.json",
        out_dir=root / paths["split"],
        ratios={name: options[name] for name in ("train", "val", "test")},
        seed=options["seed"],
        mode=options["mode"],
        folds=options["folds"],
        fold=options["fold"],
        require_all_classes=options["require_all_classes"],
    )
    write_json(root / paths["reports"] / "split.json", report)
    summary = {name: report[name]["images"] for name in ("train", "val", "test")}
    return {**summary, "max_class_share_deviation_pp": report["max_class_share_deviation_pp"]}


if __name__ == "__main__":
    main()
