"""evaluate: how good a detector is on a split.

inference (PyTorch detection over a dataset; ``EvaluateOptions``), metrics (COCO statistics
via pycocotools, P/R/F1, confusion matrix) and report (the metrics file and plots of the
evaluate stage).
Imports core, data and model.
"""
