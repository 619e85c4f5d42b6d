"""Framework loaders. One flat registry; adding a framework touches this list and one new module."""
from __future__ import annotations

from ..errors import InputConfigurationError, ValidationError
from .base import LoadedModel, Loader
from .keras import KerasLoader
from .mxnet import MXNetLoader
from .onnx import OnnxLoader
from .pytorch import PyTorchLoader
from .tensorflow import TensorFlowLoader
from .xgboost import XGBoostLoader
from .tflite import TFLiteLoader

# One line per framework; each module imports its framework lazily (inside its methods).
_CLASSES: tuple[type[Loader], ...] = (
    KerasLoader,
    MXNetLoader,
    OnnxLoader,
    PyTorchLoader,
    TensorFlowLoader,
    TFLiteLoader,
    XGBoostLoader,
)
LOADERS: dict[str, type[Loader]] = {cls.name: cls for cls in _CLASSES}

#: InputConfig.Framework values of the SageMaker API that have no loader yet.
API_FRAMEWORKS = ("TENSORFLOW", "KERAS", "MXNET", "ONNX", "PYTORCH", "XGBOOST", "TFLITE", "DARKNET", "SKLEARN")


def get_loader(framework: str) -> Loader:
    """The loader for an InputConfig.Framework value (case-insensitive)."""
    key = str(framework or "").strip().upper()
    if key in LOADERS:
        return LOADERS[key]()
    if key in API_FRAMEWORKS:
        raise InputConfigurationError(
            f"InputConfig.Framework: '{framework}' is not supported by this version of neocompile yet; "
            f"supported: {', '.join(sorted(LOADERS))}"
        )
    raise ValidationError(
        f"InputConfig.Framework: '{framework}' is not a valid framework; expected one of {', '.join(API_FRAMEWORKS)}"
    )


__all__ = ["LOADERS", "LoadedModel", "Loader", "get_loader"]
