"""neocompile: an open, self-hosted SageMaker Neo. Compile trained models for edge and cloud devices with TVM.

Public API::

    from neocompile import compile_model
    from neocompile.runtime import Model
"""
from __future__ import annotations

__version__ = "0.1.0"

import importlib.abc
import importlib.util
import sys


class _TvmWithoutTorch(importlib.abc.MetaPathFinder):
    """Import TVM with torch hidden, unless torch is already loaded.

    Two modules ``import tvm`` runs import torch eagerly when it is installed, for torch interop neocompile never
    uses: ``tvm_ffi`` (torch-tensor arguments) and ``tvm.relax.base_py_module`` (``BasePyModule``'s DLPack
    helpers). neocompile's loaders hand TVM numpy arrays or DLPack capsules, which need neither. That import cost
    every process that imports tvm about 200 MB and 2.5 s: the compile job, the load sandbox of an ONNX model, each
    worker. torch is hidden only while those two modules run; a later ``import torch`` works as usual."""

    MODULES = ("tvm_ffi", "tvm.relax.base_py_module")

    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201 - importlib's protocol
        if name not in self.MODULES or "torch" in sys.modules:
            return None
        for finder in sys.meta_path:  # the spec the other finders give, its loader wrapped
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HidingTorch(spec.loader)
                return spec
        return None


class _HidingTorch(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader):
        self.inner = inner

    def create_module(self, spec):  # noqa: ANN001, ANN201
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:  # noqa: ANN001
        sys.modules["torch"] = None  # type: ignore[assignment]  (``import torch`` raises ImportError meanwhile)
        try:
            self.inner.exec_module(module)
        finally:
            if sys.modules.get("torch", 0) is None:
                del sys.modules["torch"]


if "torch" not in sys.modules and not any(isinstance(f, _TvmWithoutTorch) for f in sys.meta_path):
    sys.meta_path.insert(0, _TvmWithoutTorch())

from .api import compile_model  # noqa: E402  (light: heavy imports happen inside)

__all__ = ["__version__", "compile_model"]
