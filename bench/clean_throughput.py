"""Benchmark: clean's throughput against merely decoding every image once.

Generates N synthetic images (seeded shapes on textured backgrounds, PNG) into a canonical
dataset with `collect`, then times, in one process on the same files, ``--rounds`` times in
turn (medians reported: this 2-core VM's speed drifts by 10-20 % between minutes):
  decode  - PIL open + full decode of every image (the floor any cleaning must pay)
  copy    - copy every image file to a new folder (clean's output folder also gets one new
            file per image; on this machine's ext4 creating a file costs 0.006-0.2 ms,
            depending on the folder and the hour, against about 0.35 ms to decode one 128 px
            PNG): context for the ratios, not part of them
  clean   - detflow.data.clean.clean_dataset with the default policy, with 1 worker process
            and with --workers (default: one per core); the outputs are compared byte for
            byte
and prints the ratios clean/decode for each N, plus the scaling from the smallest N. Before
each timing, ``os.sync()`` flushes the files written so far (the generated images, the
previous run's output), so no timing pays for the disk writes of another.

The files go to a temporary folder in ``--work-dir``: by default the repository's root, the
disk where the pipeline's ``data/clean`` is written. (On this machine's ext4 disk, creating a
file in a new folder under /tmp cost 0.11-0.2 ms all day; under the repository 0.006-0.01 ms
in the evening, up to 0.2 ms in some folders later: the copy column shows what a run met.)

With ``--baseline-src DIR`` (a copy of another commit's ``src/``, e.g. ``git archive <commit>
src | tar -x -C DIR``) it times instead, in each round, clean of that code and of this
checkout's, one after the other (the order alternating between rounds), each in a fresh
process that times only its ``clean_dataset`` call (``--workers`` processes), and prints the
ratios this/baseline of wall time and of CPU time (user + system of the process and its
workers: on a machine others load, the steadier figure) and whether the two outputs are
byte-identical.

Usage: python bench/clean_throughput.py [--sizes 1000 10000] [--image-size 128] [--workers 2]
       [--rounds 3] [--work-dir DIR] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from detflow.data import manifest
from detflow.data.clean import clean_dataset
from detflow.data.collect import CollectOptions, collect_dataset


def _image_paths(dataset_json: Path) -> list[Path]:
    dataset = manifest.load_dataset(dataset_json)
    folder = manifest.image_dir(dataset_json, dataset)
    return [folder / image["file_name"] for image in dataset["images"]]


def _decode_all(dataset_json: Path) -> float:
    paths = _image_paths(dataset_json)
    os.sync()
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as opened:
            opened.load()
    return time.perf_counter() - start


def _copy_all(dataset_json: Path, out: Path) -> float:
    paths = _image_paths(dataset_json)
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    start = time.perf_counter()
    out.mkdir()
    for path in paths:
        shutil.copyfile(path, out / path.name)
    return time.perf_counter() - start


def _clean(raw: Path, out: Path, *, workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    start = time.perf_counter()
    clean_dataset(in_json=raw, out_dir=out, workers=workers)
    return time.perf_counter() - start


_TIMED_CLEAN = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from detflow.data.clean import clean_dataset
start, cpu = time.perf_counter(), os.times()
clean_dataset(in_json=sys.argv[2], out_dir=sys.argv[3], workers=int(sys.argv[4]))
end = os.times()
used = sum(end[:4]) - sum(cpu[:4])  # user + system, this process and its workers
print(time.perf_counter() - start, used)
"""


def _clean_with(src: Path, raw: Path, out: Path, *, workers: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``clean_dataset`` imported from ``src``, in a fresh process
    (CPU: user + system of it and its worker processes, the figure a loaded machine
    disturbs least)."""
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    args = [sys.executable, "-c", _TIMED_CLEAN, str(src), str(raw), str(out), str(workers)]
    result = subprocess.run(args, check=True, capture_output=True, text=True)
    wall, cpu = result.stdout.split()[-2:]
    return float(wall), float(cpu)


def _compare(raw: Path, work: Path, baseline: Path, *, workers: int, rounds: int) -> dict:
    """Median wall and CPU seconds of clean from ``baseline`` and from this checkout."""
    this = Path(__file__).resolve().parents[1] / "src"
    times: dict[str, list[tuple[float, float]]] = {"base": [], "this": []}
    for index in range(rounds):
        order = ("base", "this") if index % 2 == 0 else ("this", "base")
        for name in order:
            src = baseline if name == "base" else this
            times[name].append(_clean_with(src, raw, work / name, workers=workers))
    return {
        f"{name}_{kind}": statistics.median(t[k] for t in runs)
        for name, runs in times.items()
        for k, kind in enumerate(("wall", "cpu"))
    } | {"same": _same_tree(work / "base", work / "this")}


def _same_tree(a: Path, b: Path) -> bool:
    """Same relative file names and bytes under ``a`` and ``b``."""
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if names != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--baseline-src", type=Path, default=None)
    args = parser.parse_args()
    if args.baseline_src is not None:
        compare_main(args)
        return
    print(
        f"machine: {os.cpu_count()} cores; images {args.image_size}x{args.image_size} PNG; "
        f"medians of {args.rounds} rounds; files under {args.work_dir}"
    )
    w = args.workers
    print(
        f"| images | decode s | copy s | clean 1 worker s | clean {w} workers s | 1w/decode "
        f"| {w}w/decode | {w}w img/s | outputs identical |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    first = None
    for count in args.sizes:
        with tempfile.TemporaryDirectory(prefix=".clean-bench-", dir=args.work_dir) as work:
            work = Path(work)
            source = {
                "format": "synthetic",
                "num_images": count,
                "image_size": args.image_size,
                "classes": ["circle", "square", "triangle"],
                "seed": 0,
            }
            collect_dataset(options=CollectOptions(source=source), out_dir=work / "raw")
            raw = work / "raw" / "dataset.json"
            _decode_all(raw)  # warm the page cache: every timing reads from memory
            times: dict[str, list[float]] = {"decode": [], "copy": [], "1": [], "N": []}
            same = True
            for _ in range(args.rounds):
                times["decode"].append(_decode_all(raw))
                times["copy"].append(_copy_all(raw, work / "copy"))
                times["1"].append(_clean(raw, work / "clean1", workers=1))
                times["N"].append(_clean(raw, work / "cleanN", workers=w))
                same = same and _same_tree(work / "clean1", work / "cleanN")
        decode, copy, single, clean = (statistics.median(t) for t in times.values())
        first = first or (count, clean)
        print(
            f"| {count} | {decode:.2f} | {copy:.2f} | {single:.2f} | {clean:.2f} "
            f"| {single / decode:.2f}x | {clean / decode:.2f}x | {count / clean:.0f} | {same} |"
        )
    if len(args.sizes) > 1:
        n0, t0 = first
        print(f"scaling: {args.sizes[-1] / n0:.0f}x the images took {clean / t0:.2f}x the time")


def _generate(work: Path, count: int, image_size: int) -> Path:
    source = {
        "format": "synthetic",
        "num_images": count,
        "image_size": image_size,
        "classes": ["circle", "square", "triangle"],
        "seed": 0,
    }
    collect_dataset(options=CollectOptions(source=source), out_dir=work / "raw")
    return work / "raw" / "dataset.json"


def compare_main(args) -> None:
    """``--baseline-src``: clean of that code against this checkout's, side by side."""
    print(
        f"machine: {os.cpu_count()} cores; images {args.image_size}x{args.image_size} PNG; "
        f"{args.workers} workers; medians of {args.rounds} rounds; baseline {args.baseline_src}"
    )
    print(
        "| images | baseline wall s | this wall s | this/baseline wall | baseline CPU s "
        "| this CPU s | this/baseline CPU | outputs identical |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for count in args.sizes:
        with tempfile.TemporaryDirectory(prefix=".clean-bench-", dir=args.work_dir) as work:
            raw = _generate(Path(work), count, args.image_size)
            _decode_all(raw)  # warm the page cache
            t = _compare(
                raw, Path(work), args.baseline_src, workers=args.workers, rounds=args.rounds
            )
        print(
            f"| {count} | {t['base_wall']:.3f} | {t['this_wall']:.3f} "
            f"| {t['this_wall'] / t['base_wall']:.3f}x | {t['base_cpu']:.3f} "
            f"| {t['this_cpu']:.3f} | {t['this_cpu'] / t['base_cpu']:.3f}x | {t['same']} |"
        )


if __name__ == "__main__":
    main()
