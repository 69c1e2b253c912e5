"""collect: ingest the configured source (data.*) into the canonical dataset at paths.raw."""

from pathlib import Path

from detflow.core.files import write_json
from detflow.data.collect import CollectOptions, collect_dataset

from _app import stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths = cfg["paths"]
    options = CollectOptions.from_config(cfg["data"], max_pixels=cfg["limits"]["max_pixels"])
    report = collect_dataset(options=options, out_dir=root / paths["raw"])
    write_json(root / paths["reports"] / "collect.json", report)
    return {
        k: report[k]
        for k in (
            "images",
            "boxes",
            "negatives",
            "unlabelled",
            "incomplete_images",
            "dropped_images",
            "dropped_boxes",
        )
    }


if __name__ == "__main__":
    main()
