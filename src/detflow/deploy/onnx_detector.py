"""ONNX Runtime inference for detflow-exported models (no training stack needed).

The ONNX graph takes one ``[3, H, W]`` float32 image in 0..1 and does resizing, normalising,
box decoding and NMS itself; it returns ``boxes`` (``[N, 4]`` xyxy pixels of the input),
``labels`` (``[N]`` int64, 1..C) and ``scores`` (``[N]`` float32). A model exported with a
``postprocess.*`` config carries it as the ``detflow_postprocess`` metadata property, and
:class:`OnnxDetector` applies it (:func:`detflow.deploy.onnx_postprocess.apply_postprocess`,
NumPy) to those outputs, so class-agnostic or soft NMS give the same detections as in
PyTorch; with the default, class-aware hard NMS, the graph has done it all.
:meth:`OnnxDetector.detect_batch` runs several images in one ONNX Runtime call, on the
graph with a batch axis (:mod:`detflow.deploy.batch_graph`). A model trained on tiles carries
its :class:`~detflow.core.tile_settings.TileSettings` as ``detflow_tiles``; its detector
slices in ``__call__`` (:func:`detect_sliced`: the tiles of one image through
``detect_batch``, merged by :mod:`detflow.core.slicing`). Imports no torch: a deploy machine
needs ONNX Runtime only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from detflow.core.errors import DetflowError
from detflow.core.slicing import tiled_predict
from detflow.core.tile_settings import tile_settings
from detflow.deploy.batch_graph import (
    BATCH_OUTPUTS,
    UNSUPPORTED_OPTIMIZERS,
    pad_batch,
    split_batch,
    with_batch_axis,
)
from detflow.deploy.onnx_postprocess import apply_postprocess
from detflow.model.postprocess_config import DEFAULT_MAX_DETECTIONS, PostprocessOptions

OUTPUTS = ("boxes", "labels", "scores")  # the graph's outputs, read by name (order varies)
METADATA_KEYS = ("detflow_class_names", "detflow_input", "detflow_score_threshold")
TILES_KEY = "detflow_tiles"  # TileSettings.to_dict() as JSON; absent or null: whole images
TILE_BATCH = 16  # tiles per detect_batch call: memory bounded by one chunk, not the image


def make_session(
    path: str | Path,
    *,
    providers: list | None = None,
    threads: int = 0,
    optimization: str = "all",
    save_optimized: str | Path | None = None,
    model: bytes | None = None,
    disabled_optimizers: tuple[str, ...] = (),
) -> ort.InferenceSession:
    """An ORT session; ``threads`` 0 = all cores; ``optimization`` basic | extended | all;
    ``save_optimized``: also write the optimised graph there; ``model``: the serialized graph
    to load instead of the file (``path`` then names it in errors); ``disabled_optimizers``:
    ORT graph optimizers (by name) to leave out."""
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.log_severity_level = 3
    if save_optimized is not None:
        options.optimized_model_filepath = str(save_optimized)
    try:
        return ort.InferenceSession(
            model if model is not None else str(path),
            options,
            providers=providers or ["CPUExecutionProvider"],
            disabled_optimizers=list(disabled_optimizers) or None,
        )
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise DetflowError(f"{path}: ONNX Runtime cannot load the model ({exc})") from exc


class OnnxDetector:
    """Callable detector over an exported model: ``detector(image)`` → numpy outputs.

    ``postprocess``: apply the model's ``detflow_postprocess`` metadata (when it has one; read
    into :attr:`postprocess`, a :class:`PostprocessOptions`) to the graph's outputs, and drop
    label 0 (background, which one-stage heads such as FCOS and RetinaNet also score), as
    :func:`detflow.model.postprocess.apply_postprocess` does in PyTorch; False returns the
    outputs as the graph gives them. ``sliced``: a model with ``detflow_tiles`` (read into
    :attr:`tiles`) detects tile by tile in ``__call__``; False runs the graph on the whole
    image (the parity gate checks the graph itself).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: list | None = None,
        threads: int = 0,
        postprocess: bool = True,
        sliced: bool = True,
    ):
        self.path = Path(path)
        if not self.path.exists():
            raise DetflowError(f"{self.path}: model not found; run the export stage first")
        self.session = make_session(self.path, providers=providers, threads=threads)
        self._providers, self._threads, self._batch_session = providers, threads, None
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in METADATA_KEYS if k not in meta]
        if missing:
            raise DetflowError(
                f"{self.path}: not a detflow model (metadata {missing} missing); "
                "export it with the detflow export stage"
            )
        self.input_name = self.session.get_inputs()[0].name
        read_settings(self, meta, postprocess=postprocess, sliced=sliced)

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def __call__(self, image) -> dict:
        """``image``: ``[3, H, W]`` float32 in 0..1 (numpy or torch); sliced when the model
        has tiles (:func:`detect_sliced`)."""
        if self.tiles is not None:
            return detect_sliced(self, input_to_rgb(image))
        array = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
        boxes, labels, scores = self.session.run(list(OUTPUTS), {self.input_name: array})
        return finish_outputs(self, boxes, labels, scores)

    def detect_batch(self, images: list) -> list[dict]:
        """``[3, H_i, W_i]`` float32 images (sizes may differ) in one ONNX Runtime call →
        one output per image, each exactly what ``detector(image)`` gives. The batched graph
        (:func:`~detflow.deploy.batch_graph.with_batch_axis`) is built on the first call."""
        if self._batch_session is None:
            batched = with_batch_axis(onnx.load(str(self.path)))
            self._batch_session = make_session(
                self.path,
                providers=self._providers,
                threads=self._threads,
                model=batched.SerializeToString(),
                disabled_optimizers=UNSUPPORTED_OPTIMIZERS,
            )
        arrays = [np.asarray(image, dtype=np.float32) for image in images]
        batch, sizes = pad_batch(arrays)
        outputs = self._batch_session.run(list(BATCH_OUTPUTS), {"images": batch, "sizes": sizes})
        return [finish_outputs(self, *parts) for parts in split_batch(*outputs)]


def finish_outputs(detector, boxes, labels, scores) -> dict:
    """A graph's raw ``boxes``/``labels``/``scores`` → the detector's output: as given when it
    is raw, else after the model's post-processing, without label 0 (background; one-stage
    heads score it too, as :func:`detflow.model.postprocess.apply_postprocess` drops it).
    Shared by the ONNX Runtime and OpenVINO detectors."""
    boxes = np.asarray(boxes).reshape(-1, 4).astype(np.float32, copy=False)
    labels = np.asarray(labels).astype(np.int64, copy=False)
    scores = np.asarray(scores).astype(np.float32, copy=False)
    if detector._raw:
        return {"boxes": boxes, "labels": labels, "scores": scores}
    if detector._apply:
        return apply_postprocess(boxes, scores, labels, config=detector.postprocess)
    keep = labels > 0
    return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}


def detect_sliced(detector, image: np.ndarray) -> dict:
    """``detector`` (with :attr:`tiles`) on one ``[H, W, 3]`` uint8 RGB image, tile by tile:
    the tiles through ``detector.detect_batch`` in chunks of :data:`TILE_BATCH`, merged
    (:func:`detflow.core.slicing.tiled_predict`), at most the post-processing's
    ``max_detections``. Returns numpy ``boxes`` (``[K, 4]`` xyxy px of ``image``),
    ``labels``, ``scores``, best first; the tile count is kept in ``detector.last_tiles``.
    No torch. Shared by the ONNX Runtime and OpenVINO detectors."""

    def predict_batch(tiles: list[np.ndarray]) -> list[dict]:
        return detector.detect_batch([rgb_to_input(tile) for tile in tiles])

    limit = getattr(detector.postprocess, "max_detections", None)
    out = tiled_predict(
        image,
        predict_batch,
        tiles=detector.tiles,
        max_detections=limit if isinstance(limit, int) else DEFAULT_MAX_DETECTIONS,
        batch_size=TILE_BATCH,
    )
    detector.last_tiles = out["tiles"]
    return {key: out[key] for key in OUTPUTS}


def rgb_to_input(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB → the graph's ``[3, H, W]`` float32 input in 0..1 (the same
    values as the training stack's tensors)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def input_to_rgb(image) -> np.ndarray:
    """The graph's ``[3, H, W]`` float input in 0..1 → ``[H, W, 3]`` uint8 RGB (exact for
    inputs made from uint8 pixels)."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[0] != 3:
        raise DetflowError(f"image must be a [3, H, W] float array in 0..1, got {array.shape}")
    return np.clip(np.rint(array * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _tiles(path: Path, meta: dict[str, str]):
    """The model's ``detflow_tiles`` as :class:`~detflow.core.tile_settings.TileSettings`,
    or None (absent or null); DetflowError names the file when they cannot be read."""
    if TILES_KEY not in meta:
        return None
    try:
        return tile_settings(json.loads(meta[TILES_KEY]))
    except (ValueError, TypeError) as exc:  # JSON or ConfigError (a ValueError)
        raise DetflowError(
            f"{path}: {TILES_KEY} cannot be read ({exc}); export the model again"
        ) from exc


def read_settings(
    detector, meta: dict[str, str], *, postprocess: bool, sliced: bool = True
) -> None:
    """Set a detector's ``metadata``, ``class_names``, ``postprocess`` (the export's
    ``postprocess.*``, when ``postprocess`` and the model has it) and ``tiles`` (the
    model's :class:`~detflow.core.tile_settings.TileSettings` when ``sliced`` and it has
    them, else None) from its detflow metadata; shared by the ONNX Runtime and OpenVINO
    detectors."""
    detector.metadata = meta
    detector.tiles = _tiles(detector.path, meta) if sliced else None
    detector.last_tiles = 1
    detector.class_names = json.loads(meta["detflow_class_names"])
    detector.postprocess = None
    detector._raw = not postprocess
    if postprocess and "detflow_postprocess" in meta:
        detector.postprocess = PostprocessOptions.from_config(
            json.loads(meta["detflow_postprocess"])
        )
    # class-aware hard NMS is the graph's own (detector_does_all): nothing to add
    detector._apply = (
        detector.postprocess is not None and not detector.postprocess.detector_does_all
    )
