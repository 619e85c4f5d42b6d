"""The model's weights outside its library: ``compiled.params`` beside ``compiled.so``.

TVM's Relax VM keeps a model's constants in the executable's constant pool, and ``export_library`` embeds that pool in
the shared library: serialized, then as one giant LLVM constant, then in the object file and the linked library,
several copies of every weight at once (a 575 MB VGG-19 peaked at 3.7 GiB). Instead, once the CPU pipeline has folded
and packed the weights, :func:`lift_params` turns every constant of at least :data:`MIN_BYTES` in each exported Relax
function into a trailing parameter of that function (Relax's ``num_input`` convention: the first ``num_input``
parameters are the user's inputs), before the VM lowering, which then treats them as any other argument (the kernels
check the tensors they receive). The compile collects the lifted tensors (references, not copies) and writes them once, streamed, with TVM's
``save_param_dict`` format, which the C++ runtime reads with ``runtime.LoadParamsFromFile``. ``runtime.Model`` and
``bin/neo_run`` load that file once and pass its tensors after the inputs; a library without a params file beside it
(an older package) runs as before.

Parameter names are ``<function>:<index>`` in the function's parameter order after its inputs (``main:0``, ...).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from pathlib import Path
from typing import Any, Iterator

from .errors import PackageError

#: The params file of ``compiled.so`` is ``compiled.params``: the library's path with this suffix.
SUFFIX = ".params"
#: Constants smaller than this stay in the library (scalars, shape bookkeeping, small biases are not worth a lookup).
MIN_BYTES = 1024


def params_path(library: str | Path) -> Path:
    """Where the weights of ``library`` live: ``compiled.so`` -> ``compiled.params``."""
    return Path(library).with_suffix(SUFFIX)


def param_name(function: str, index: int) -> str:
    return f"{function}:{index}"


@dataclasses.dataclass
class LiftedParams:
    """What one compile lifted: per exported function, its weights in parameter order (TVM tensors, not copies)
    until :meth:`save` writes them; the counts and byte total stay for the manifest."""

    functions: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    nbytes: int = 0

    def add(self, function: str, tensors: list[Any]) -> None:
        self.functions[function] = tensors
        self.counts[function] = len(tensors)
        self.nbytes += sum(_nbytes(t) for t in tensors)

    def save(self, path: Path) -> Path | None:
        """Write the lifted weights to ``path`` (TVM's param-dict format, streamed tensor by tensor) and let go of
        them; nothing is written when nothing was lifted. Returns the path written, or None."""
        if not any(self.functions.values()):
            return None
        import tvm

        named = {param_name(f, i): t for f, tensors in self.functions.items() for i, t in enumerate(tensors)}
        self.functions = {}
        tvm.get_global_func("runtime.SaveParamsToFile")(named, str(path))
        return path

    def manifest(self, path: Path | None) -> dict[str, Any]:
        """``Model.Weights`` of compiled.meta for the file :meth:`save` wrote (None: the weights are embedded)."""
        if path is None:
            return {"Storage": "embedded", "File": None, "Parameters": {}, "Bytes": 0}
        return {"Storage": "external", "File": path.name, "Parameters": dict(sorted(self.counts.items())),
                "Bytes": self.nbytes}


_active: contextvars.ContextVar[LiftedParams | None] = contextvars.ContextVar("neocompile_lifted_params", default=None)


@contextlib.contextmanager
def lifting(enabled: bool = True) -> Iterator[LiftedParams | None]:
    """While active, :func:`lift_params` (in the compile pipeline) lifts weights into the yielded LiftedParams;
    disabled (or outside), it leaves the module as it is and weights stay embedded in the library."""
    collected = LiftedParams() if enabled else None
    token = _active.set(collected)
    try:
        yield collected
    finally:
        _active.reset(token)


def lift_params(mod: Any) -> Any:
    """Turn the large constants of each exported Relax function of ``mod`` into trailing parameters, collected by
    the active :func:`lifting` context; without one, ``mod`` is returned unchanged. Run after constant folding and
    weight packing, before the VM lowering."""
    collected = _active.get()
    if collected is None:
        return mod
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Lift(relax.PyExprMutator):
        def __init__(self, module: Any):
            super().__init__(module)
            self.vars: list[Any] = []
            self.tensors: list[Any] = []
            self.seen: dict[Any, Any] = {}  # one parameter per tensor, however often it is used

        def visit_generic_const_(self, op: Any) -> Any:
            value = op.value
            if not isinstance(value, tvm.runtime.Tensor) or _nbytes(value) < MIN_BYTES:
                return op
            var = self.seen.get(value)
            if var is None:
                var = relax.Var(f"neocompile_param_{len(self.vars)}", op.ty)
                self.seen[value] = var
                self.vars.append(var)
                self.tensors.append(value)
            return var

    updates = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function) or not _exported(func):
            continue
        name = str(func.attrs["global_symbol"]) if "global_symbol" in func.attrs else gv.name_hint
        if name in collected.counts:
            continue  # lifted already (a pipeline run twice)
        lift = Lift(mod)
        body = lift.visit_expr(func.body)
        if not lift.vars:
            continue
        lifted = relax.Function(list(func.params) + lift.vars, body, func.ret_ty, func.is_pure, func.attrs, func.span)
        num_input = int(func.attrs["num_input"]) if "num_input" in func.attrs else len(func.params)
        updates[gv] = lifted.with_attr("num_input", num_input)
        collected.add(name, lift.tensors)
    if not updates:
        return mod
    functions = {gv: updates.get(gv, func) for gv, func in mod.functions_items()}
    return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)


def _exported(func: Any) -> bool:
    """A function the VM exposes by name: it carries a ``global_symbol`` (private functions do not)."""
    return func.attrs is not None and "global_symbol" in func.attrs


def _nbytes(tensor: Any) -> int:
    import tvm

    n = 1
    for d in tensor.shape:
        n *= int(d)
    dtype = tvm.runtime.DataType(str(tensor.dtype))
    return n * ((dtype.bits * dtype.lanes + 7) // 8)


# -- loading (runtime.Model) ------------------------------------------------------------------------------------------

def load(library: str | Path, weights: dict[str, Any] | None = None, function: str = "main") -> list[Any]:
    """The weights to pass after the inputs of ``function`` of ``library``: its params file loaded once, in
    parameter order ([] when the library has no params file beside it: weights embedded, an older package).

    ``weights`` is the package manifest's ``Model.Weights``, when there is one: a package that says its weights are
    external but lacks the file, or a file that does not hold what it says, is refused naming the file."""
    path = params_path(library)
    if (weights or {}).get("Storage") == "embedded":
        return []
    declared = (weights or {}).get("Storage") == "external"
    if declared:
        path = Path(library).parent / (weights.get("File") or path.name)
    if not path.is_file():
        if declared:
            raise PackageError(f"{path.name}: the package's weights file is missing (compiled.meta Model.Weights says "
                               f"they are stored in {path.name} beside {Path(library).name}); unpack the whole package")
        return []
    import tvm

    try:
        table = tvm.get_global_func("runtime.LoadParamsFromFile")(str(path))
    except Exception as exc:  # TVM's reader raises on a bad magic number or a truncated tensor
        raise PackageError(f"{path.name}: not a readable weights file ({_first_line(exc)}); the package is damaged: "
                           "compile the model again or unpack the package anew") from None
    want = (weights or {}).get("Parameters", {}).get(function)
    count = int(want) if want is not None else sum(1 for k in table.keys() if str(k).startswith(f"{function}:"))
    missing = [param_name(function, i) for i in range(count) if param_name(function, i) not in table]
    if missing:
        raise PackageError(f"{path.name}: the weights file lacks {len(missing)} of the {count} weights of "
                           f"'{function}' ({', '.join(missing[:3])}...); the package is damaged")
    return [table[param_name(function, i)] for i in range(count)]


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
