"""augment: albumentations pipeline (augment.*) over the train split into paths.augmented."""

from pathlib import Path

from detflow.augment import augment_dataset
from detflow.files import write_json

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths, options = cfg["paths"], cfg["augment"]
    report = augment_dataset(
        train_json=Path(paths["split"]) / "train.json",
        out_dir=root / paths["augmented"],
        transforms=options["transforms"],
        copies=options["copies"],
        min_visibility=options["min_visibility"],
        min_area=options["min_area"],
        seed=cfg["seed"],
    )
    write_json(root / paths["reports"] / "augment.json", report)
    return report


if __name__ == "__main__":
    main()
