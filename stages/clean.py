"""clean: decode, deduplicate and check every image and box of paths.raw into paths.clean."""

from pathlib import Path

from detflow.core.files import write_bytes, write_json
from detflow.data.clean import CleanPolicy, clean_dataset

from _app import log, stage


@stage
def main(cfg: dict, root: Path) -> dict:
    paths, reports = cfg["paths"], root / cfg["paths"]["reports"]
    policy = CleanPolicy.from_config(cfg["clean"], max_pixels=cfg["limits"]["max_pixels"])
    report = clean_dataset(
        in_json=Path(paths["raw"]) / "dataset.json", out_dir=root / paths["clean"], policy=policy
    )
    write_json(reports / "clean.json", report, expand_depth=2)  # a record per line
    rows = "".join(f"{name},{count}\n" for name, count in report["class_counts"].items())
    write_bytes(reports / "clean_classes.csv", f"class,boxes\n{rows}".encode())
    for warning in report["warnings"]:
        log.warning("clean: %s", warning)
    keys = ("images_kept", "images_dropped", "images_incomplete_kept", "boxes_kept")
    keys += ("boxes_dropped", "groups_merged")
    return {k: report[k] for k in keys}


if __name__ == "__main__":
    main()
