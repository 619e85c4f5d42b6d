"""neocompile: an open, self-hosted SageMaker Neo. Compile trained models for edge and cloud devices with TVM.

Public API::

    from neocompile import compile_model
    from neocompile.runtime import Model
"""
from __future__ import annotations

__version__ = "0.1.0"

from .api import compile_model  # noqa: E402  (light: heavy imports happen inside)

__all__ = ["__version__", "compile_model"]
