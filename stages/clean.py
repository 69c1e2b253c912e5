"""clean: decode, deduplicate and check every image and box of paths.raw into paths.clean."""

from pathlib import Path

from detflow.clean import clean_dataset
from detflow.files import write_json

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths, options = cfg["paths"], cfg["clean"]
    report = clean_dataset(
        in_json=Path(paths["raw"]) / "dataset.json",
        out_dir=root / paths["clean"],
        min_box_px=options["min_box_px"],
        clip_tolerance_px=options["clip_tolerance_px"],
        near_duplicate_distance=options["near_duplicate_distance"],
        max_pixels=cfg["limits"]["max_pixels"],
    )
    write_json(root / paths["reports"] / "clean.json", report)
    return {k: report[k] for k in ("images_kept", "images_dropped", "boxes_kept", "boxes_dropped")}


if __name__ == "__main__":
    main()
