"""augment: albumentations pipeline (augment.*) over the train split into paths.augmented;
counts in paths.reports/augment.json, a preview grid in paths.reports/augment_preview.png."""

from pathlib import Path

from detflow.core.files import write_json
from detflow.data.augment import AugmentOptions, augment_dataset, write_preview

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths = cfg["paths"]
    out_dir, reports = root / paths["augmented"], root / paths["reports"]
    options = AugmentOptions.from_config(
        cfg["augment"], seed=cfg["seed"], max_pixels=cfg["limits"]["max_pixels"]
    )
    report = augment_dataset(
        train_json=Path(paths["split"]) / "train.json", out_dir=out_dir, options=options
    )
    write_json(reports / "augment.json", report)
    write_preview(
        augmented_json=out_dir / "train.json",
        out_png=reports / "augment_preview.png",
        samples=options.preview_samples,
    )
    return {k: v for k, v in report.items() if not isinstance(v, dict)}


if __name__ == "__main__":
    main()
