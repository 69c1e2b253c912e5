"""split: seeded, group-aware train/val/test split of paths.clean into paths.split."""

from pathlib import Path

from detflow.files import write_json
from detflow.split import split_dataset

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths, options = cfg["paths"], cfg["split"]
    ratios = {name: options[name] for name in ("train", "val", "test")}
    report = split_dataset(
        in_json=Path(paths["clean"]) / "dataset.json",
        out_dir=root / paths["split"],
        ratios=ratios,
        seed=options["seed"],
    )
    write_json(root / paths["reports"] / "split.json", report)
    return {name: report[name]["images"] for name in ("train", "val", "test")}


if __name__ == "__main__":
    main()
