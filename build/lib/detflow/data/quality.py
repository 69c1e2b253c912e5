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
    gray = image.convert("L")
    gray.thumbnail((256, 256))
    pixels = np.asarray(gray, dtype=np.float32)
    flags = []
    mean = float(pixels.mean())
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
    if _entropy(pixels) < limits["min_entropy_bits"]:
        flags.append("low_information")
    width, height = image.size
    if max(width, height) / max(min(width, height), 1) > limits["max_aspect"]:
        flags.append("extreme_aspect")
    return flags


def _laplacian_variance(pixels: np.ndarray) -> float:
    lap = (
        pixels[1:-1, :-2]
        + pixels[1:-1, 2:]
        + pixels[:-2, 1:-1]
        + pixels[2:, 1:-1]
        - 4 * pixels[1:-1, 1:-1]
    )
    return float(lap.var())


def _entropy(pixels: np.ndarray) -> float:
    counts = np.bincount(pixels.astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())
