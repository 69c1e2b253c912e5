"""model: torchvision detectors and what defines them.

build (the model zoo and ``build_model``), backbone and mobilenet (trunks), heads, weights
(offline pretrained weights), postprocess (the shared ``postprocess.*`` step) with
postprocess_config (``PostprocessOptions``, torch-free),
checkpoint_file (the checkpoint format) and restore (a model rebuilt from a checkpoint).
Imports core only.
"""
