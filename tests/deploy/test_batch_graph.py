"""The batch axis: the single-image graph inside an ONNX Loop gives every image of a batch,
whatever its size, exactly the detections the single-image graph gives it, in one call."""

import numpy as np
import onnx
import pytest
from PIL import Image

from detflow.core.errors import DetflowError
from detflow.deploy.batch_graph import (
    BATCH_OUTPUTS,
    UNSUPPORTED_OPTIMIZERS,
    pad_batch,
    split_batch,
    with_batch_axis,
)
from detflow.deploy.onnx_detector import OnnxDetector, make_session
from detflow.deploy.runtime import image_input


def _images(folder):
    return [
        image_input(np.asarray(Image.open(path).convert("RGB")))
        for path in sorted(folder.glob("*.png"))
    ]


def test_pad_and_split_keep_each_image_and_its_rows():
    images = [np.full((3, 4, 6), 0.5, np.float32), np.ones((3, 7, 2), np.float32)]
    batch, sizes = pad_batch(images)
    assert batch.shape == (2, 3, 7, 6) and sizes.tolist() == [[4, 6], [7, 2]]
    assert (batch[0, :, :4, :6] == 0.5).all() and batch[0, :, 4:].sum() == 0
    boxes = np.arange(12, dtype=np.float32).reshape(3, 4)
    parts = split_batch(boxes, np.array([1, 2, 1]), np.array([0.9, 0.8, 0.7]), np.array([2, 0, 1]))
    assert [len(p[0]) for p in parts] == [2, 0, 1] and parts[2][2].tolist() == [0.7]
    with pytest.raises(DetflowError, match="at least one image"):
        pad_batch([])


def test_batched_graph_has_a_dynamic_batch_axis_and_matches_one_image_runs(served_model):
    model_path, folder = served_model
    batched = with_batch_axis(onnx.load(str(model_path)))
    onnx.checker.check_model(batched)
    assert [i.name for i in batched.graph.input] == ["images", "sizes"]
    assert batched.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in batched.graph.output] == list(BATCH_OUTPUTS)
    session = make_session(
        model_path, model=batched.SerializeToString(), disabled_optimizers=UNSUPPORTED_OPTIMIZERS
    )
    single = make_session(model_path)
    images = _images(folder)  # four sizes, 64x64 to 120x90
    for batch in (images[:1], images, images[::-1] + images):  # 1, 4 and 8 images
        padded, sizes = pad_batch(batch)
        outputs = session.run(list(BATCH_OUTPUTS), {"images": padded, "sizes": sizes})
        assert len(outputs[3]) == len(batch) and outputs[3].sum() > 0
        for image, (boxes, labels, scores) in zip(batch, split_batch(*outputs), strict=True):
            want = single.run(["boxes", "labels", "scores"], {"image": image})
            for got, expected in zip((boxes, labels, scores), want, strict=True):
                np.testing.assert_array_equal(got, expected)  # bit for bit
    assert UNSUPPORTED_OPTIMIZERS  # documented ORT workaround, passed to make_session


def test_detector_batch_equals_its_single_calls(served_model):
    model_path, folder = served_model
    detector = OnnxDetector(model_path)
    images = _images(folder)
    for got, image in zip(detector.detect_batch(images), images, strict=True):
        want = detector(image)
        for key in ("boxes", "labels", "scores"):
            np.testing.assert_array_equal(got[key], want[key])


def test_a_graph_that_is_not_a_detflow_single_image_graph_is_refused():
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", 1, [1])], [value("y", 1, [1])])
    with pytest.raises(DetflowError, match="not a single-image detflow graph"):
        with_batch_axis(onnx.helper.make_model(graph))
