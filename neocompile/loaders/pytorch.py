"""PyTorch loader: TorchScript (``torch.jit.save``, what SageMaker users upload) and ``torch.export`` programs.

TVM 0.27 has no TorchScript importer, so TorchScript goes TorchScript -> ExportedProgram
(``TS2EPConverter``, a private torch API: torch is pinned) -> ``from_exported_program``; if that
conversion fails, through ``torch.onnx.export`` -> the ONNX frontend. ``.pt2`` files are loaded with
``torch.export.load`` and imported directly.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datainput import TensorSpec, check_against_model
from ..errors import InputConfigurationError
from .base import LoadedModel, Loader, outputs_from_relax

LEXICAL_HINT = (
    "Make sure that inputs are lexically ordered (input0, input1, ...) and that DataInputConfig shapes match the model."
)


def _fail(what: str, exc: BaseException) -> InputConfigurationError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return InputConfigurationError(f"TVM cannot convert the PyTorch model. {what}: {type(exc).__name__}: {text} {LEXICAL_HINT}")


class PyTorchLoader(Loader):
    name = "PYTORCH"
    suffixes = (".pth", ".pt", ".pt2")
    layout = "NCHW"
    example = '{"input0": [1, 3, 224, 224]} or [[1, 3, 224, 224]]'
    accepts_list = True

    def load(self, path: Path, shapes: dict[str, tuple[int, ...]] | None, options: dict[str, Any]) -> LoadedModel:
        with _quiet():
            return self._load(path, shapes, options)

    def _load(self, path: Path, shapes: dict[str, tuple[int, ...]] | None, options: dict[str, Any]) -> LoadedModel:
        import torch

        dtype = options.get("dtype", "float32")
        if path.suffix == ".pt2":
            return self._load_exported(path, shapes, dtype)
        module = self._load_scripted(path)
        if not shapes:
            raise InputConfigurationError(
                f"DataInputConfig is required for TorchScript models (the file records no input shapes); expected e.g. {self.example}"
            )
        # TorchScript records no shapes: the user's shapes define the inputs, in name order.
        declared = [TensorSpec(name, dtype, dims) for name, dims in shapes.items()]
        examples = tuple(_example(spec) for spec in declared)
        try:
            with torch.no_grad():
                module(*examples)
        except Exception as exc:
            raise _fail(f"Running it on inputs of shapes {[list(s.shape) for s in declared]} failed", exc) from exc
        mod, route = self._import_scripted(module, examples, declared)
        return LoadedModel(
            mod=mod,
            inputs=declared,
            outputs=outputs_from_relax(mod),
            reference=_torch_reference(module),
            framework=self.name,
            framework_version=f"torch {torch.__version__}",
            route=route,
            data_input_config={s.name: list(s.shape) for s in declared},
        )

    # -- TorchScript ---------------------------------------------------------------------------------------------
    def _load_scripted(self, path: Path) -> Any:
        import torch

        try:
            return torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as jit_exc:
            try:
                obj = torch.load(str(path), map_location="cpu", weights_only=False)
            except Exception:
                raise InputConfigurationError(
                    f"Unable to load PyTorch model {path.name}: it is neither TorchScript (torch.jit.save) nor a torch.save'd module "
                    f"({type(jit_exc).__name__}: {str(jit_exc).strip().splitlines()[0] if str(jit_exc).strip() else ''}). "
                    "Save it with torch.jit.trace(...).save() or torch.export.save()."
                ) from jit_exc
            if isinstance(obj, dict):
                raise InputConfigurationError(
                    f"PyTorch file {path.name} holds a state_dict (weights only), not a model; save the model with "
                    "torch.jit.trace(model, example).save('model.pth') or torch.export.save()."
                )
            if not isinstance(obj, torch.nn.Module):
                raise InputConfigurationError(f"PyTorch file {path.name} holds a {type(obj).__name__}, not a model")
            return obj.eval()

    def _import_scripted(self, module: Any, examples: tuple, declared: list[TensorSpec]) -> tuple[Any, str]:
        import torch
        from tvm.relax.frontend.torch import from_exported_program

        try:
            from torch._export.converter import TS2EPConverter

            if isinstance(module, torch.jit.ScriptModule):
                # The converter leaves dims symbolic (Dim.AUTO); re-export pins them to the given shapes.
                module = TS2EPConverter(module, examples).convert().module()
            program = torch.export.export(module, examples, strict=False)
            return from_exported_program(program, keep_params_as_input=False), "torchscript -> torch.export (TS2EPConverter) -> relax"
        except Exception as first:
            first_error = first
        # Fallback: the legacy TorchScript ONNX exporter, then the ONNX frontend.
        import onnx

        from .onnx import import_onnx

        names = [s.name for s in declared]
        buf = io.BytesIO()
        try:
            torch.onnx.export(module, examples, buf, input_names=names, dynamo=False, opset_version=17)
            model = onnx.load_from_string(buf.getvalue())
        except Exception as exc:
            raise _fail(f"Conversion failed (torch.export: {type(first_error).__name__}: {first_error}; ONNX export)", exc) from exc
        return import_onnx(model, {s.name: s.shape for s in declared}, "PyTorch"), "torchscript -> onnx (torch.onnx.export) -> relax"

    # -- torch.export ----------------------------------------------------------------------------------------------
    def _load_exported(self, path: Path, shapes: dict[str, tuple[int, ...]] | None, dtype: str) -> LoadedModel:
        import torch
        from tvm.relax.frontend.torch import from_exported_program

        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise InputConfigurationError(f"Unable to load torch.export program {path.name}: {type(exc).__name__}: {exc}") from exc
        user = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
        placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        declared = []
        for i, name in enumerate(user):
            val = placeholders[name].meta.get("val") if name in placeholders else None
            dims = tuple(int(d) if isinstance(d, int) else str(d) for d in val.shape) if val is not None else None
            dt = str(val.dtype).replace("torch.", "") if val is not None else dtype
            declared.append(TensorSpec(f"input{i}", dt, dims))
        shapes = check_against_model(shapes, declared, self.name, self.layout, self.example)
        try:
            mod = from_exported_program(program, keep_params_as_input=False)
        except Exception as exc:
            raise _fail("Importing the torch.export program failed", exc) from exc
        inputs = [TensorSpec(s.name, s.dtype, shapes[s.name]) for s in declared]
        return LoadedModel(
            mod=mod,
            inputs=inputs,
            outputs=outputs_from_relax(mod),
            reference=_torch_reference(program.module()),
            framework=self.name,
            framework_version=f"torch {torch.__version__}",
            route="torch.export program -> relax.frontend.torch.from_exported_program",
            data_input_config={k: list(v) for k, v in shapes.items()},
        )


@contextlib.contextmanager
def _quiet():
    """Keep torch's export chatter (specialisation notes, deprecations) off the user's terminal."""
    import torch  # noqa: F401  (registers torch's loggers, which set their own levels)

    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("torch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _example(spec: TensorSpec):
    import torch

    return torch.zeros(spec.shape, dtype=getattr(torch, spec.dtype))


def _torch_reference(module: Any):
    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        torch.set_num_threads(1)
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        flat = []

        def walk(o):
            if isinstance(o, torch.Tensor):
                flat.append(o.detach().cpu().numpy())
            elif isinstance(o, (list, tuple)):
                for x in o:
                    walk(x)
            elif isinstance(o, dict):
                for x in o.values():
                    walk(x)

        walk(out)
        return flat

    return run
