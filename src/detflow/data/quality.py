"""Image-quality flags (reported by clean, never used to drop by default).

Computed on a grayscale copy downscaled to at most 256 px on its long side:
``dark`` / ``bright`` (mean luminance), ``blurry`` (variance of a 3×3 Laplacian),
``low_information`` (Shannon entropy of the 8-bit histogram), ``extreme_aspect``
(long side / short side of the full image).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DEFAULT_THRESHOLDS = {
    "dark_mean": 30.0,  # mean luminance below this (0..255)
    "bright_mean": 225.0,  # mean luminance above this
    "blur_variance": 20.0,  # Laplacian variance below this
    "min_entropy_bits": 3.0,  # histogram entropy below this
    "max_aspect": 4.0,  # long/short side above this
}


def quality_flags(image: Image.Image, thresholds: dict | None = None) -> list[str]:
    """Names of the quality problems of an RGB image (empty when none)."""
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    gray = image if image.mode == "L" else image.convert("L")
    if max(gray.size) > 256:
        gray = gray.copy()  # thumbnail() works in place
        gray.thumbnail((256, 256))
    pixels = np.asarray(gray, dtype=np.int16)
    histogram = np.array(gray.histogram(), dtype=np.float64)  # 256 counts, in C
    flags = []
    mean = float(histogram @ np.arange(256)) / histogram.sum()
    if mean < limits["dark_mean"]:
        flags.append("dark")
    if mean > limits["bright_mean"]:
        flags.append("bright")
    if (
        pixels.shape[0] >= 3
        and pixels.shape[1] >= 3
        and _laplacian_variance(pixels) < limits["blur_variance"]
    ):
        flags.append("blurry")
    if _entropy(histogram) < limits["min_entropy_bits"]:
        flags.append("low_information")
    width, height = image.size
    if max(width, height) / max(min(width, height), 1) > limits["max_aspect"]:
        flags.append("extreme_aspect")
    return flags


def _laplacian_variance(pixels: np.ndarray) -> float:
    """Variance of the 3 x 3 Laplacian of 8-bit ``pixels`` (int16: |value| <= 1020)."""
    lap = (
        pixels[1:-1, :-2]
        + pixels[1:-1, 2:]
        + pixels[:-2, 1:-1]
        + pixels[2:, 1:-1]
        - 4 * pixels[1:-1, 1:-1]
    )
    return float(lap.var())


def _entropy(histogram: np.ndarray) -> float:
    """Shannon entropy in bits of a 256-bin histogram of counts."""
    p = histogram[histogram > 0] / histogram.sum()
    return float(-(p * np.log2(p)).sum())
