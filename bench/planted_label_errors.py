"""Planted label errors: how many does evaluate's label-issue ranking find?

Copies this working tree (git-tracked files) and a dataset to ``--workdir``: ``--dataset
thermal`` the bundled thermal set (80 held-out boxes), ``dense`` 200 generated dense images
(``bench/dataset_table.py``'s: 15-45 small objects of 3 classes each, 1,940 held-out boxes).
Composes ``params.yaml`` from ``conf/`` for it (as ``make params``), runs the real pipeline up
to ``split``, plants ``--plants`` label errors in the val and test splits (default 20: half
removed boxes, a quarter class swaps, a quarter boxes shifted by half their size; seeded, so
the same every time), records the planted splits as the split stage's outputs (``dvc commit``),
then runs ``dvc repro train`` (augment, train with the default recipe, evaluate) and reports how
many planted errors are among the top ``--top`` candidates of
``reports/evaluate/label_issues.json`` (recall: found / planted) and how many of those
candidates are planted (precision: planted / candidates in the top ``--top``; the list holds
only the boxes the model confidently disagrees with, so it may hold fewer).

Planting touches only val and test, so the train split, and with it training, is the one of
the unplanted pipeline, up to which epoch val picks as best: ``--model models/train/best.pt``
reuses the default run's checkpoint instead of training (minutes instead of ~10 on 2 cores).

A candidate finds a planted error when it is on the same image and its box overlaps the
planted box (the label as planted: a swapped or shifted box) or the original box (a removed
box: the object the label lost) with IoU >= 0.3. A workdir that already has a trained
model is reused. ``evaluate`` always runs with the working tree's current code
(``dvc repro --single-item evaluate``); export and optimize are not run.

    python bench/planted_label_errors.py --workdir /tmp/planted   # trains: ~10 min on 2 cores
    python bench/planted_label_errors.py --workdir /tmp/planted --model models/train/best.pt
    python bench/planted_label_errors.py --dataset dense --plants 40 --workdir /tmp/planted_dense
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from dataset_table import generate_dense  # bench/, this script's folder

from detflow.core.boxes import box_iou, xywh_to_xyxy

REPO = Path(__file__).resolve().parents[1]
THERMAL = "thermal_dogs_people"
DENSE_IMAGES = 200
KINDS = ("removed", "swapped", "shifted")
SYNCED = ("src", "stages", "conf", "dvc.yaml", "pyproject.toml")


def sh(args: list[str], cwd: Path) -> None:
    """Run in ``cwd`` with this interpreter first on PATH and the copy's library importable."""
    print("+", " ".join(args), flush=True)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(cwd / "src")}
    subprocess.run(args, cwd=cwd, check=True, env=env)


def dvc(cwd: Path, *args: str) -> None:
    sh([sys.executable, "-m", "dvc", *args], cwd)


def plants(total: int) -> dict[str, int]:
    """How many of each kind: half removed, a quarter swapped, the rest shifted."""
    return {
        "removed": total // 2,
        "swapped": total // 4,
        "shifted": total - total // 2 - total // 4,
    }


def dataset_overrides(dataset: str) -> list[str]:
    """The Hydra overrides that point ``params.yaml`` at the copied ``dataset``."""
    return [] if dataset == "thermal" else ["data=voc", "data.path=data/sources/dense"]


def copy_repo(workdir: Path, dataset: str) -> None:
    """The working tree's tracked files (not data/sources) and the dataset's images."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if name.startswith("data/sources/") or not (REPO / name).is_file():
            continue
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, workdir / name)
    if dataset == "dense":
        generate_dense(workdir / "data" / "sources" / "dense", images=DENSE_IMAGES)
    else:
        source = REPO / "data" / "sources" / THERMAL
        if not source.is_dir():
            source = REPO.parent / "shared" / "datasets" / THERMAL
        shutil.copytree(source, workdir / "data" / "sources" / THERMAL)
    sh(["git", "init", "-q"], workdir)
    sh(["git", "-c", "user.name=bench", "-c", "user.email=b@x.invalid", "add", "-A"], workdir)
    sh(
        ["git", "-c", "user.name=bench", "-c", "user.email=b@x.invalid", "commit", "-qm", "copy"],
        workdir,
    )


def plant(split_dir: Path, *, counts: dict[str, int], seed: int = 0) -> list[dict]:
    """Plant ``counts`` errors of each kind in ``val.json`` and ``test.json`` (COCO xywh px boxes);
    returns one record per planted error (``image`` file name, ``kind``, ``box`` as planted
    or None when removed, ``original`` box)."""
    rng = random.Random(seed)
    splits = {
        name: json.loads((split_dir / f"{name}.json").read_text()) for name in ("val", "test")
    }
    pool = [(name, a) for name, d in splits.items() for a in d["annotations"] if a["bbox"][2] > 4]
    chosen = rng.sample(pool, sum(counts.values()))
    kinds = [k for k, n in counts.items() for _ in range(n)]
    classes = sorted({c["id"] for d in splits.values() for c in d["categories"]})
    planted = []
    for (name, ann), kind in zip(chosen, kinds, strict=True):
        images = {im["id"]: im for im in splits[name]["images"]}
        image, original = images[ann["image_id"]], list(ann["bbox"])
        if kind == "removed":
            splits[name]["annotations"].remove(ann)
        elif kind == "swapped":
            ann["category_id"] = rng.choice([c for c in classes if c != ann["category_id"]])
        else:
            x, y, w, h = original
            dx, dy = rng.choice([-1, 1]) * w / 2, rng.choice([-1, 1]) * h / 2
            x = min(max(x + dx, 0.0), image["width"] - w)
            y = min(max(y + dy, 0.0), image["height"] - h)
            ann["bbox"] = [x, y, w, h]
        box = None if kind == "removed" else ann["bbox"]
        planted.append(
            {"image": image["file_name"], "kind": kind, "box": box, "original": original}
        )
    for name, data in splits.items():
        (split_dir / f"{name}.json").write_text(json.dumps(data, indent=1))
    return planted


def iou_xywh(a, b) -> float:
    """IoU of two COCO ``xywh`` px boxes (detflow's one IoU)."""
    return float(box_iou(xywh_to_xyxy([a]), xywh_to_xyxy([b]))[0, 0])


def score(planted: list[dict], issues: list[dict], *, top: int, min_iou: float = 0.3) -> dict:
    """Planted errors found among the first ``top`` issues, and issues matching no plant."""
    found, unplanted = set(), 0
    for issue in issues[:top]:
        hit = None
        for k, p in enumerate(planted):
            boxes = [b for b in (p["box"], p["original"]) if b is not None]
            if p["image"] == issue["image"] and any(
                iou_xywh(issue["box"], b) >= min_iou for b in boxes
            ):
                hit = k
                break
        if hit is None:
            unplanted += 1
        else:
            found.add(hit)
    by_kind = {k: sum(planted[i]["kind"] == k for i in found) for k in KINDS}
    listed = min(top, len(issues))
    return {
        "top": top,
        "candidates": len(issues),
        "planted": len(planted),
        "found": len(found),
        "found_by_kind": by_kind,
        "top_planted": listed - unplanted,
        "top_not_planted": unplanted,
        "precision": round((listed - unplanted) / listed, 3) if listed else 0.0,
        "recall": round(len(found) / len(planted), 3) if planted else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/planted_label_errors"))
    parser.add_argument("--dataset", choices=("thermal", "dense"), default="thermal")
    parser.add_argument("--plants", type=int, default=20, help="label errors to plant (>= 4)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--model",
        type=Path,
        help="use this best.pt (trained by the default pipeline on the same train split) "
        "instead of training",
    )
    parser.add_argument(
        "--issue-confidence", type=float, help="evaluate.issue_confidence for this run"
    )
    args = parser.parse_args()
    if args.plants < 4:
        parser.error(f"--plants {args.plants}: plant at least 4 (one of each kind, 2 removed)")
    work = args.workdir.resolve()
    planted_file = work / "planted.json"
    overrides = dataset_overrides(args.dataset)
    if args.issue_confidence is not None:
        overrides.append(f"evaluate.issue_confidence={args.issue_confidence}")
    compose = [sys.executable, "stages/compose_params.py", *overrides]
    if not (work / "models" / "train" / "best.pt").is_file():
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        copy_repo(work, args.dataset)
        sh(compose, work)
        dvc(work, "repro", "split")
        planted = plant(work / "data" / "split", counts=plants(args.plants))
        planted_file.write_text(json.dumps(planted, indent=1))
        dvc(work, "commit", "-f", "split")
        if args.model is None:
            dvc(work, "repro", "train")
        else:  # train reads only the (unplanted) train split; val picks the best epoch
            (work / "models" / "train").mkdir(parents=True, exist_ok=True)
            shutil.copy2(args.model, work / "models" / "train" / "best.pt")
    for name in SYNCED:  # the current code (a no-op on a fresh workdir), then evaluate only
        src, dst = REPO / name, work / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    sh(compose, work)  # params.yaml from the current conf/, as `make params` writes it
    dvc(work, "repro", "--single-item", "evaluate")
    planted = json.loads(planted_file.read_text())
    issues = json.loads((work / "reports" / "evaluate" / "label_issues.json").read_text())
    result = score(planted, issues["issues"], top=args.top)
    metrics = json.loads((work / "reports" / "evaluate" / "metrics.json").read_text())
    result["test_map50_with_planted_errors"] = round(metrics["map50"], 4)
    result["label_issue_thresholds"] = metrics.get("label_issue_thresholds")
    result["issue_confidence"] = yaml.safe_load((work / "params.yaml").read_text())["evaluate"][
        "issue_confidence"
    ]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
