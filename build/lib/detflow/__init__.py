"""detflow: a declarative, reproducible object-detection pipeline (library part).

The library imports neither DVC nor Hydra: every function takes plain values and paths.
"""

from detflow.core.errors import ConfigError, DataError, DetflowError

__all__ = ["ConfigError", "DataError", "DetflowError"]
__version__ = "0.1.0"
