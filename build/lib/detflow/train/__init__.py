"""train: fitting a detector.

loop (``train_detector``: epochs, validation, checkpoints, resume, early stopping), options
(``TrainOptions``, the validated ``train.*``), optimizers (optimizers and schedules) and
distributed (DDP under torchrun). Imports core, data, model and evaluate.
"""
