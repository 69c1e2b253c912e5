"""augment: albumentations pipeline (augment.*) over the train split into paths.augmented;
counts in paths.reports/augment.json, a preview grid in paths.reports/augment_preview.png."""

from pathlib import Path

from detflow.augment import augment_dataset, write_preview
from detflow.files import write_json

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths, options = cfg["paths"], cfg["augment"]
    out_dir, reports = root / paths["augmented"], root / paths["reports"]
    report = augment_dataset(
        train_json=Path(paths["split"]) / "train.json",
        out_dir=out_dir,
        transforms=options["transforms"],
        copies=options["copies"],
        min_visibility=options["min_visibility"],
        min_area=options["min_area"],
        balance_ratio=options["balance_ratio"],
        workers=options["workers"],
        seed=cfg["seed"],
        max_pixels=cfg["limits"]["max_pixels"],
    )
    write_json(reports / "augment.json", report)
    write_preview(
        augmented_json=out_dir / "train.json",
        out_png=reports / "augment_preview.png",
        samples=options["preview_samples"],
    )
    return {k: v for k, v in report.items() if not isinstance(v, dict)}


if __name__ == "__main__":
    main()
