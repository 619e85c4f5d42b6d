"""The loader interface: one small class per framework, heavy imports inside its methods."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..datainput import TensorSpec


@dataclasses.dataclass
class LoadedModel:
    """A model imported into Relax, with its signature and a way to run the source framework."""

    mod: Any  # tvm.IRModule whose "main" takes the inputs in ``inputs`` order (params bound)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: Runs the source framework on a list of arrays (``inputs`` order); used by verification.
    reference: Callable[[Sequence[np.ndarray]], list[np.ndarray]] | None = None
    #: Framework name and version for the manifest.
    framework: str = ""
    framework_version: str = ""
    #: How the model got into Relax, e.g. "onnx -> relax.frontend.onnx".
    route: str = ""
    #: Shapes as given by the user (or derived), for DerivedDataInputConfig.
    data_input_config: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    #: The narrowest arithmetic the model computes in ("float32", "float16", "bfloat16", "int8" for quantized
    #: graphs): picks the default verification tolerance (verify.default_tolerance).
    precision: str = "float32"
    #: Routes tried before ``route`` worked, in order, each ``{"Route": ..., "Error": ...}`` (the manifest's
    #: Compilation.ImportRoutesFailed), so a user sees why the first choice did not take their model.
    routes_failed: list[dict[str, str]] = dataclasses.field(default_factory=list)
    #: What the manifest should say about the model beyond its signature (Model.Details), e.g. an XGBoost model's
    #: objective, num_class, base_score and the trees compiled.
    model_details: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: For a framework that cannot be imported beside neocompile (``Loader.side_reference``): the JSON-able
    #: arguments of that function (file names inside the archive), from which the reference is recorded.
    side_reference_args: dict[str, Any] | None = None
    #: The fraction of float input values verification makes NaN, for a model that handles missing values (XGBoost's
    #: default branches); 0 for the others, whose outputs a NaN would only spread through.
    missing_values: float = 0.0


class Loader:
    """A framework loader. Subclasses set the class attributes and implement ``load``."""

    #: InputConfig.Framework value.
    name: ClassVar[str]
    #: Model file suffixes Neo accepts inside the archive.
    suffixes: ClassVar[tuple[str, ...]]
    #: Layout rule stated in DataInputConfig errors.
    layout: ClassVar[str] = "NCHW"
    example: ClassVar[str] = '{"data": [1, 3, 224, 224]}'
    #: Whether DataInputConfig may be a list (PyTorch).
    accepts_list: ClassVar[bool] = False
    #: "module:function" that runs the model in a side interpreter (``side_python``) for verification, called as
    #: ``function(LoadedModel.side_reference_args, input specs, arrays) -> outputs``; None: the reference runs in
    #: the load child (``LoadedModel.reference``).
    side_reference: ClassVar[str | None] = None

    @staticmethod
    def side_python() -> tuple[Any, str]:
        """The interpreter for ``side_reference`` and where it came from, or ``(None, why there is none)``."""
        return None, "no side interpreter"

    def find_model(self, root: Path) -> Path:
        """Pick the model file out of the extracted archive using Neo's rules."""
        from ..archive import find_exactly_one

        return find_exactly_one(root, self.suffixes, self.name)

    def load(self, path: Path, shapes: dict[str, tuple[int, ...]] | None, options: dict[str, Any]) -> LoadedModel:
        raise NotImplementedError


def outputs_from_relax(mod: Any, names: Sequence[str] | None = None) -> list[TensorSpec]:
    """Output specs from the Relax main function's return type; unnamed outputs are ``output_{i}``."""
    from tvm import relax

    ret = mod["main"].ret_ty
    fields = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    specs = []
    for i, t in enumerate(fields):
        shape = tuple(int(d) if hasattr(d, "value") or isinstance(d, int) else str(d) for d in t.shape.values) if t.shape is not None else None
        name = names[i] if names and i < len(names) else f"output_{i}"
        specs.append(TensorSpec(name=name, dtype=str(t.dtype), shape=shape))
    return specs
