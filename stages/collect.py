"""collect: ingest the configured source (data.*) into the canonical dataset at paths.raw."""

from pathlib import Path

from detflow.collect import collect_dataset
from detflow.files import write_json

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths = cfg["paths"]
    report = collect_dataset(
        source=cfg["data"], out_dir=root / paths["raw"], max_pixels=cfg["limits"]["max_pixels"]
    )
    write_json(root / paths["reports"] / "collect.json", report)
    return {
        k: report[k]
        for k in ("images", "boxes", "negatives", "unlabelled", "dropped_images", "dropped_boxes")
    }


if __name__ == "__main__":
    main()
