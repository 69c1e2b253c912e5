"""deploy: from a checkpoint to a model that runs without PyTorch.

export (ONNX with pre/post-processing inside, gated by parity), variants (the optimize
stage's ORT/INT8/fp16/TensorRT builds) with quantize, benchmark (variants side by side with
the accuracy budget), publish (the deploy folder and model card), and the ONNX runtime path:
onnx_detector, onnx_postprocess, predict and predict_inputs (``detflow predict``), slicing
and tile_merge (sliced inference on large images), which import no torch. Options:
``ExportOptions`` (export), ``OptimizeOptions`` (variants). Never imports train.
"""
