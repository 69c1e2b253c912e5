"""A batch axis for a detflow graph: the single-image graph as the body of an ONNX ``Loop``.

The exported graph takes one ``[3, H, W]`` image: torchvision's detectors resize, propose
and suppress per image in Python, so tracing fixes the image count. :func:`with_batch_axis`
keeps that graph unchanged as the body of a ``Loop`` over the images, so one ONNX Runtime
call runs a whole batch of images of different sizes, and each image gets exactly the
detections the single-image graph gives it (the body slices its own ``H, W`` back out).

Batched graph (any variant: FP32, FP16 or INT8 QDQ; imports no torch):

- inputs ``images`` ``[N, 3, H, W]`` float32 0..1, each image at the top left, zero-padded
  to the batch's largest ``H`` and ``W``; ``sizes`` ``[N, 2]`` int64, each image's ``H, W``;
- outputs ``boxes`` ``[D, 4]`` (``xyxy`` pixels of each image), ``labels`` ``[D]`` int64,
  ``scores`` ``[D]`` float32: the images' detections one after another, and ``counts``
  ``[N]`` int64, how many of the ``D`` rows belong to each image (:func:`split_batch`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from detflow.core.errors import DetflowError

SINGLE_OUTPUTS = ("boxes", "labels", "scores")  # the single-image graph's, by name
BATCH_INPUTS = ("images", "sizes")
BATCH_OUTPUTS = ("boxes", "labels", "scores", "counts")
# ONNX Runtime 1.32's GatherSliceToSplitFusion fails on graphs inside a Loop body ("Attempt to
# replace the existing tensor"); sessions of a batched graph run without it
UNSUPPORTED_OPTIMIZERS = ("GatherSliceToSplitFusion",)
PREFIX = "detflow_batch/"  # the wrapper's own value names
_TYPES = {"boxes": TensorProto.FLOAT, "labels": TensorProto.INT64, "scores": TensorProto.FLOAT}
_EMPTY = {"boxes": [0, 4], "labels": [0], "scores": [0]}


def with_batch_axis(model: onnx.ModelProto) -> onnx.ModelProto:
    """The batched form of ``model`` (a detflow single-image graph; see the module doc); its
    metadata is kept. DetflowError when ``model`` is not a single-image detflow graph."""
    graph = model.graph
    outputs = [o.name for o in graph.output]
    if len(graph.input) != 1 or sorted(outputs) != sorted(SINGLE_OUTPUTS):
        raise DetflowError(
            f"not a single-image detflow graph (inputs {[i.name for i in graph.input]}, "
            f"outputs {outputs}); export it with the detflow export stage"
        )
    taken = {n for n in _names(graph) if n.startswith(PREFIX) or n in (*BATCH_INPUTS, "counts")}
    if taken:
        raise DetflowError(f"the graph already has values named {sorted(taken)[:3]}; re-export it")
    body = _loop_body(graph)
    nodes = [
        helper.make_node("Shape", ["images"], [_n("batch_shape")]),
        _const(_n("batch_axis"), np.array(0, np.int64)),
        helper.make_node(
            "Gather", [_n("batch_shape"), _n("batch_axis")], [_n("batch_count")], axis=0
        ),
        _const(_n("batch_go"), np.array(True)),
        *(_const(_n(f"empty_{n}"), _empty(n)) for n in SINGLE_OUTPUTS),
        helper.make_node(
            "Loop",
            [_n("batch_count"), _n("batch_go"), *(_n(f"empty_{n}") for n in SINGLE_OUTPUTS)],
            list(BATCH_OUTPUTS),
            body=body,
        ),
    ]
    image = graph.input[0].type.tensor_type
    inputs = [
        helper.make_tensor_value_info("images", image.elem_type, ["batch", 3, "height", "width"]),
        helper.make_tensor_value_info("sizes", TensorProto.INT64, ["batch", 2]),
    ]
    outs = [
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["detections", 4]),
        helper.make_tensor_value_info("labels", TensorProto.INT64, ["detections"]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["detections"]),
        helper.make_tensor_value_info("counts", TensorProto.INT64, ["batch"]),
    ]
    batched = helper.make_model(
        helper.make_graph(nodes, f"{graph.name}_batched", inputs, outs),
        opset_imports=list(model.opset_import),
        ir_version=model.ir_version,
        producer_name="detflow",
    )
    batched.metadata_props.extend(model.metadata_props)
    return batched


def _loop_body(graph: onnx.GraphProto) -> onnx.GraphProto:
    """The Loop body: image ``i`` sliced to its size, the single-image graph (initializers
    and all), its detections appended to the carried ones, its count as a scan output."""
    renamed = {name: _n(f"image_{name}") for name in SINGLE_OUTPUTS}
    nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.output[:] = [renamed.get(name, name) for name in node.output]
        copy.input[:] = [renamed.get(name, name) for name in node.input]
        nodes.append(copy)
    image_name = graph.input[0].name
    head = [
        helper.make_node("Gather", ["images", _n("i")], [_n("padded_image")], axis=0),
        helper.make_node("Gather", ["sizes", _n("i")], [_n("image_size")], axis=0),
        _const(_n("slice_starts"), np.array([0, 0], np.int64)),
        _const(_n("slice_axes"), np.array([1, 2], np.int64)),
        helper.make_node(
            "Slice",
            [_n("padded_image"), _n("slice_starts"), _n("image_size"), _n("slice_axes")],
            [image_name],
        ),
    ]
    tail = [helper.make_node("Identity", [_n("go")], [_n("go_on")])]
    for name in SINGLE_OUTPUTS:
        tail.append(
            helper.make_node(
                "Concat", [_n(f"so_far_{name}"), renamed[name]], [_n(f"next_{name}")], axis=0
            )
        )
    tail += [
        helper.make_node("Shape", [renamed["scores"]], [_n("image_count_1d")]),
        _const(_n("squeeze_axes"), np.array([0], np.int64)),
        helper.make_node(
            "Squeeze", [_n("image_count_1d"), _n("squeeze_axes")], [_n("image_count")]
        ),
    ]
    inputs = [
        helper.make_tensor_value_info(_n("i"), TensorProto.INT64, []),
        helper.make_tensor_value_info(_n("go"), TensorProto.BOOL, []),
        *(
            helper.make_tensor_value_info(_n(f"so_far_{n}"), _TYPES[n], None)
            for n in SINGLE_OUTPUTS
        ),
    ]
    outputs = [
        helper.make_tensor_value_info(_n("go_on"), TensorProto.BOOL, []),
        *(helper.make_tensor_value_info(_n(f"next_{n}"), _TYPES[n], None) for n in SINGLE_OUTPUTS),
        helper.make_tensor_value_info(_n("image_count"), TensorProto.INT64, []),
    ]
    body = helper.make_graph(
        [*head, *nodes, *tail], "image", inputs, outputs, initializer=list(graph.initializer)
    )
    body.value_info.extend(v for v in graph.value_info if v.name not in renamed)
    return body


def _n(name: str) -> str:
    """A name of the batch wrapper's own, apart from any the exported graph uses."""
    return f"{PREFIX}{name}"


def _names(graph: onnx.GraphProto) -> set[str]:
    """Every value name of ``graph`` and of the graphs inside its nodes."""
    names = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for attribute in node.attribute:
            for sub in (*attribute.graphs, *([attribute.g] if attribute.HasField("g") else [])):
                names |= _names(sub)
    return names


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(value))


def _empty(name: str) -> np.ndarray:
    dtype = np.int64 if _TYPES[name] == TensorProto.INT64 else np.float32
    return np.zeros(_EMPTY[name], dtype)


def pad_batch(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``[3, H_i, W_i]`` float32 images → (``images`` ``[N, 3, H, W]``, zero-padded at the
    bottom and right to the largest ``H`` and ``W``; ``sizes`` ``[N, 2]`` int64)."""
    if not images:
        raise DetflowError("a batch needs at least one image")
    sizes = np.array([image.shape[1:] for image in images], np.int64)
    height, width = sizes.max(axis=0)
    batch = np.zeros((len(images), 3, height, width), np.float32)
    for index, image in enumerate(images):
        batch[index, :, : image.shape[1], : image.shape[2]] = image
    return batch, sizes


def split_batch(boxes, labels, scores, counts) -> list[tuple[np.ndarray, ...]]:
    """The batched graph's outputs → one ``(boxes [n, 4], labels [n], scores [n])`` per image."""
    ends = np.cumsum(counts)
    starts = ends - counts
    return [(boxes[a:b], labels[a:b], scores[a:b]) for a, b in zip(starts, ends, strict=True)]
