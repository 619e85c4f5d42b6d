"""PyTorch loader: TorchScript (``torch.jit.save``, what SageMaker users upload) and ``torch.export`` programs.

TVM 0.27 has no TorchScript importer, so TorchScript is tried through two routes in turn (``TORCHSCRIPT_ROUTES``):
TorchScript -> ExportedProgram (``torchscript.to_exported_program``: torch's ``TS2EPConverter``, a private API, torch
is pinned, on a graph specialised to the given shapes) -> ``from_exported_program``; then ``torch.onnx.export`` ->
the ONNX frontend. ``.pt2`` files are loaded with ``torch.export.load`` and imported directly. Operators TVM's
importer lacks (fused fast paths) are written out first (``torch_decompositions``). The route that worked is the
model's ``route`` (the manifest's ImportRoute), after the ones that failed and why; when none works, the error
names each route and what stopped it.

Nothing from the file runs: only ``torch.jit.load`` and the weights-only unpickler read pickles (a model pickled
whole is refused with how to save it), and ``.pt2`` files are loaded with torch's code-running paths refused
(``_load_program``).
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datainput import TensorSpec, check_against_model
from ..errors import InputConfigurationError
from .base import LoadedModel, Loader, outputs_from_relax

LEXICAL_HINT = (
    "Make sure that inputs are lexically ordered (input0, input1, ...) and that DataInputConfig shapes match the model."
)
HOW_TO_SAVE = (
    "Save the model as TorchScript, torch.jit.trace(model, example).save('model.pth') or "
    "torch.jit.script(model).save('model.pth'), or as a torch.export program, "
    "torch.export.save(torch.export.export(model, args), 'model.pt2')."
)
# Advice torch wraps around the one line saying why a load failed (it says "corrupted" for any non-zip file).
_ADVICE_LINE = re.compile(r"^(Weights only load failed|\(\d\)|Check the documentation|In PyTorch 2\.6|Please file an issue)")
_ADVICE_TAIL = re.compile(r"\s*(This is an internal miniz error|Please use `torch\.serialization|In PyTorch 2\.6).*$")


def _reason(exc: BaseException) -> str:
    """The line of a torch load error that says why (the refused global, the missing record), without the advice."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    for line in text.splitlines():
        line = line.strip()
        if "WeightsUnpickler error:" in line:
            line = line.split("WeightsUnpickler error:", 1)[1].strip()
        elif _ADVICE_LINE.match(line):
            continue
        line = _ADVICE_TAIL.sub("", line).rstrip(":")
        if line:
            return line
    return type(exc).__name__


# The line where a Python exception's own text starts, after TorchScript's "Traceback of TorchScript" listing.
_ERROR_LINE = re.compile(r"^(\w+\.)*\w+(Error|Exception): ")
MAX_CAUSE = 800


def _cause(exc: BaseException) -> str:
    """What went wrong, in the exception's own words: TorchScript's interpreter errors open with "The following
    operation failed..." and a listing of frames; keep the error line(s) at their end instead of that first line.
    A wrapper's message ("TS2EPConverter failed for node prim::If") is followed by the error it wraps."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if any(line.startswith("Traceback of TorchScript") for line in lines):
        starts = [i for i, line in enumerate(lines) if _ERROR_LINE.match(line)]
        lines = lines[starts[-1]:] if starts else lines
    text = _UNSUPPORTED.sub(r"TVM's importer has no converter for operator(s) \1", " ".join(lines))
    name = type(exc).__name__
    text = text if _ERROR_LINE.match(text) else f"{name}: {text}" if text else name
    inner = exc.__cause__
    if inner is not None and str(inner).strip() and str(inner).strip() not in text:
        text = f"{text} ({_cause(inner)})"
    if len(text) > MAX_CAUSE:
        text = text[: MAX_CAUSE - 3].rstrip() + "..."
    return text


# TVM's from_exported_program names what it lacks in an assertion.
_UNSUPPORTED = re.compile(r"Unsupported function types \[([^\]]*)\]")


def _fail(what: str, exc: BaseException, about_inputs: bool = False) -> InputConfigurationError:
    """``about_inputs``: the failure comes from the given inputs (count, shapes, order), so the hint applies."""
    cause = _cause(exc)
    hint = f"{'' if cause.endswith(('.', '?', '!')) else '.'} {LEXICAL_HINT}" if about_inputs else ""
    return InputConfigurationError(f"TVM cannot convert the PyTorch model. {what}: {cause}{hint}")


#: The routes a TorchScript model is tried through, in order; each name is what the manifest records.
ROUTE_EXPORT = ("torchscript -> torch.export (TS2EPConverter, specialised to the input shapes) "
                "-> relax.frontend.torch.from_exported_program")
ROUTE_ONNX = "torchscript -> onnx (torch.onnx.export, dynamo=False, opset 17) -> relax.frontend.onnx.from_onnx"
TORCHSCRIPT_ROUTES = (ROUTE_EXPORT, ROUTE_ONNX)
ROUTE_PT2 = "torch.export program -> relax.frontend.torch.from_exported_program"
#: The input dtype where CompilerOptions ``dtype`` names none (Neo's).
DEFAULT_DTYPE = "float32"


class _RouteError(Exception):
    """A route failed at a named step."""

    def __init__(self, step: str, exc: BaseException):
        super().__init__(f"failed in {step}: {_cause(exc)}")


def _step(step: str, run: Any) -> Any:
    try:
        return run()
    except Exception as exc:
        raise _RouteError(step, exc) from exc


def input_dtypes(option: Any, names: Sequence[str]) -> list[str]:
    """The dtype of each input from CompilerOptions ``dtype``: one for all, a list in input order, or
    ``{name: dtype}`` (inputs it leaves out are float32)."""
    if option is None:
        return [DEFAULT_DTYPE] * len(names)
    if isinstance(option, str):
        return [option] * len(names)
    if isinstance(option, (list, tuple)):
        if len(option) != len(names):
            raise InputConfigurationError(
                f"CompilerOptions dtype lists {len(option)} dtype(s) {list(option)} for {len(names)} input(s) "
                f"({', '.join(names)}); expected one per input, in DataInputConfig's order")
        return list(option)
    unknown = [k for k in option if k not in names]
    if unknown:
        raise InputConfigurationError(
            f"CompilerOptions dtype names input(s) {', '.join(repr(k) for k in unknown)} that DataInputConfig does not "
            f"have; inputs: {', '.join(names)}")
    return [option.get(name, DEFAULT_DTYPE) for name in names]


def bind_by_parameter_names(module: Any, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """``shapes`` in the order the model takes them.

    Neo feeds a PyTorch model its DataInputConfig inputs in the lexical order of their names (``input0``,
    ``input1``, ...; datainput.parse sorts them so). When the names are exactly forward's first parameters
    (``{"input_ids": ..., "attention_mask": ...}`` for a traced BERT), the user means those parameters: they are
    bound by name, in forward's order. Lexical order would hand the attention mask to ``input_ids`` — and
    verification could not see it, since the framework reference is fed the same way.
    """
    try:
        params = [a.name for a in module.forward.schema.arguments[1:]]  # [0] is self
    except (AttributeError, RuntimeError):
        return shapes
    head = params[: len(shapes)]
    if set(shapes) == set(head) and list(shapes) != head:
        return {name: shapes[name] for name in head}
    return shapes


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

        if path.suffix == ".pt2":
            return self._load_exported(path, shapes, options.get("dtype"))
        module = self._load_scripted(path)
        if not shapes:
            raise InputConfigurationError(
                f"DataInputConfig is required for TorchScript models (the file records no input shapes); expected e.g. {self.example}"
            )
        # TorchScript records no shapes: the user's shapes define the inputs, in name order, or in forward's order
        # when they are named after its parameters.
        shapes = bind_by_parameter_names(module, shapes)
        dtypes = input_dtypes(options.get("dtype"), list(shapes))
        declared = [TensorSpec(name, dtype, dims) for (name, dims), dtype in zip(shapes.items(), dtypes)]
        examples = tuple(_example(spec) for spec in declared)
        try:
            with torch.no_grad():
                module(*examples)
        except Exception as exc:
            given = ", ".join(f"{s.name}{list(s.shape)} {s.dtype}" for s in declared)
            error = _fail(f"Running it on inputs {given} failed", exc, about_inputs=True)
            if options.get("dtype") is None and re.search(r"\b(Long|Int|integer|scalar type)", str(exc)):
                error = InputConfigurationError(
                    f"{error} Inputs are float32 unless CompilerOptions dtype says otherwise, e.g. "
                    f'{{"dtype": "int64"}} or per input {{"dtype": {{"{declared[-1].name}": "int64"}}}}.')
            raise error from exc
        mod, route, failed = self._import_scripted(module, examples, declared)
        return LoadedModel(
            mod=mod,
            inputs=declared,
            outputs=outputs_from_relax(mod),
            reference=_torch_reference(module),
            framework=self.name,
            framework_version=f"torch {torch.__version__}",
            route=route,
            routes_failed=failed,
            data_input_config={s.name: list(s.shape) for s in declared},
        )

    # -- TorchScript ---------------------------------------------------------------------------------------------
    def _load_scripted(self, path: Path) -> Any:
        """TorchScript only. Anything else is classified with the weights-only unpickler, which builds tensors and
        plain containers and refuses every other global: nothing pickled in the archive ever runs."""
        import torch

        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            jit_reason = _reason(exc)
        else:
            try:
                return module.eval()
            except Exception:  # a frozen module has no training flag to set
                return module
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            reason = _reason(exc)
            if "TorchScript archive" in str(exc):
                what = f"is a TorchScript archive that torch.jit.load refuses ({jit_reason})"
            elif "GLOBAL" in str(exc):
                what = (f"is not TorchScript (torch.jit.load: {jit_reason}) but a pickle that needs Python code to load "
                        f"(the weights-only unpickler refuses it: {reason}), such as a model saved whole with torch.save(model)")
            else:
                what = (f"is neither TorchScript (torch.jit.load: {jit_reason}) nor a PyTorch checkpoint "
                        f"(the weights-only unpickler: {reason})")
            raise InputConfigurationError(
                f"Unable to load PyTorch model {path.name}: it {what}. neocompile never unpickles Python objects from an "
                f"untrusted archive. {HOW_TO_SAVE}"
            ) from None
        if isinstance(obj, dict):
            keys = [k for k in obj if isinstance(k, str)]
            what = "a state_dict (weights only)" if any(isinstance(v, torch.Tensor) for v in obj.values()) else "a dictionary"
            if any(k in obj for k in ("state_dict", "model_state_dict", "model")):
                what = f"a training checkpoint (a dictionary of {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"
            raise InputConfigurationError(f"PyTorch file {path.name} holds {what}, not a model: the code that builds the "
                                          f"model is not in it. {HOW_TO_SAVE}")
        raise InputConfigurationError(f"PyTorch file {path.name} holds a {type(obj).__name__}, not a model. {HOW_TO_SAVE}")

    def _import_scripted(self, module: Any, examples: tuple, declared: list[TensorSpec]) -> tuple[Any, str, list]:
        """Try each of TORCHSCRIPT_ROUTES in turn: the module, the route that worked (its string also says which
        failed first, with why) and the failed routes as manifest records."""
        routes = {ROUTE_EXPORT: lambda: _via_export(module, examples),
                  ROUTE_ONNX: lambda: _via_onnx(module, examples, declared)}
        failed: list[dict[str, str]] = []
        for route in TORCHSCRIPT_ROUTES:
            try:
                mod = routes[route]()
            except _RouteError as exc:
                failed.append({"Route": route, "Error": str(exc)})
                continue
            except InputConfigurationError as exc:  # import_onnx's: names the operator and the route already
                failed.append({"Route": route, "Error": str(exc).removeprefix("InputConfiguration: ")})
                continue
            texts = "; ".join(f"{f['Route']}: {f['Error']}" for f in failed)
            return mod, route + (f" (after {len(failed)} failed route(s): {texts})" if failed else ""), failed
        numbered = " ".join(f"({i}) {f['Route']}: {f['Error']}" for i, f in enumerate(failed, 1))
        raise InputConfigurationError(f"TVM cannot convert the PyTorch model. No route converts it: {numbered}")

    # -- torch.export ----------------------------------------------------------------------------------------------
    def _load_exported(self, path: Path, shapes: dict[str, tuple[int, ...]] | None, dtype: Any) -> LoadedModel:
        import torch

        program = _load_program(path)
        user = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
        placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        declared = []
        for i, name in enumerate(user):
            val = placeholders[name].meta.get("val") if name in placeholders else None
            dims = tuple(int(d) if isinstance(d, int) else str(d) for d in val.shape) if val is not None else None
            dt = str(val.dtype).replace("torch.", "") if val is not None else DEFAULT_DTYPE
            declared.append(TensorSpec(f"input{i}", dt, dims))
        if dtype is not None:
            wanted = input_dtypes(dtype, [s.name for s in declared])
            wrong = [f"{s.name} is {s.dtype}, not {w}" for s, w in zip(declared, wanted) if w != s.dtype]
            if wrong:
                raise InputConfigurationError(
                    f"CompilerOptions dtype does not match the torch.export program, which records its input dtypes: "
                    f"{'; '.join(wrong)}. Leave dtype out for .pt2 files")
        shapes = check_against_model(shapes, declared, self.name, self.layout, self.example)
        try:
            mod = _import_program(program)
        except _RouteError as exc:
            raise InputConfigurationError(f"TVM cannot convert the PyTorch model. {ROUTE_PT2}: {exc}") from exc
        inputs = [TensorSpec(s.name, s.dtype, shapes[s.name]) for s in declared]
        return LoadedModel(
            mod=mod,
            inputs=inputs,
            outputs=outputs_from_relax(mod),
            reference=_torch_reference(program.module()),
            framework=self.name,
            framework_version=f"torch {torch.__version__}",
            route=ROUTE_PT2,
            data_input_config={k: list(v) for k, v in shapes.items()},
        )


def _import_program(program: Any) -> Any:
    """An ExportedProgram in Relax: fused layers written out, core ATen, then TVM's importer."""
    from tvm.relax.frontend.torch import from_exported_program

    from .torch_decompositions import decompose

    program = _step("the decomposition to core ATen operators", lambda: decompose(program))
    missing = _unconvertible(program)
    if missing:
        raise _RouteError("TVM's importer", NotImplementedError(
            f"TVM's importer has no converter for operator(s) {', '.join(missing)}"))
    return _step("TVM's importer",
                 lambda: from_exported_program(program, keep_params_as_input=False, run_ep_decomposition=False))


def _unconvertible(program: Any) -> list[str]:
    """The operators of ``program`` TVM's importer has no converter for, by their ATen names; an operator kept for
    its side effects (``with_effects``: error checks such as ``_linalg_check_errors``) says so."""
    import torch
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    known = ExportedProgramImporter().convert_map
    missing: dict[str, None] = {}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        target = node.target
        if target is torch.ops.higher_order.with_effects:
            missing[f"{node.args[1]} (kept for its side effects)"] = None
        elif getattr(target, "__name__", None) not in known:
            missing[str(target)] = None
    return list(missing)


def _via_export(module: Any, examples: tuple) -> Any:
    from .torchscript import to_exported_program

    program = _step("TS2EPConverter", lambda: to_exported_program(module, examples))
    return _import_program(program)


def _via_onnx(module: Any, examples: tuple, declared: list[TensorSpec]) -> Any:
    """The legacy TorchScript ONNX exporter, then the ONNX frontend. The module is called through a wrapper that
    flattens its outputs: the exporter refuses dict outputs (``prim::DictConstruct``)."""
    import onnx
    import torch

    from .onnx import import_onnx

    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module

        def forward(self, *args: Any) -> tuple:
            return tuple(_flatten(self.model(*args)))

    def export() -> None:
        with torch.no_grad():
            flat = torch.jit.trace(Flat().eval(), examples, check_trace=False)
        torch.onnx.export(flat, examples, buf, input_names=[s.name for s in declared], dynamo=False, opset_version=17)

    buf = io.BytesIO()
    _step("torch.onnx.export", export)
    model = onnx.load_from_string(buf.getvalue())
    return import_onnx(model, {s.name: s.shape for s in declared}, "PyTorch")


def _flatten(out: Any) -> list[Any]:
    """A model's outputs in order: tensors, and the tensors in tuples, lists and dicts (values in their order)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _flatten(item)]
    return []


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
    """Zeros, except ones for integer and bool inputs (an all-zero attention mask hides every token)."""
    import torch

    dtype = getattr(torch, spec.dtype)
    return (torch.zeros if dtype.is_floating_point else torch.ones)(spec.shape, dtype=dtype)


def _torch_reference(module: Any):
    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        torch.set_num_threads(1)
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        return [t.detach().cpu().numpy() for t in _flatten(out)]

    return run


# -- torch.export.load without running code from the file ----------------------------------------------------------
# Left alone, torch.export.load (torch 2.13) runs what the file asks for: torch.load(weights_only=False) for the
# example inputs, pickled weights and constants (and the whole 2.7 zip format), pickle.loads for "opaque"
# constants, TorchScript custom objects, imports of modules a pytree context names, sympy.sympify (an eval) of
# every symbolic shape expression, and dlopen of AOTInductor libraries packed in the archive. _load_program lets
# tensors, JSON and plain sympy expressions through and refuses the rest; then it checks that the graph calls
# PyTorch operators only, before anything runs it.

class _Refused(Exception):
    """The file asked for code to run. Not a RuntimeError: torch.export.load retries another format on those."""


class _Override:
    """A module seen through a few replaced attributes."""

    def __init__(self, real: Any, **replaced: Any):
        self._real, self._replaced = real, replaced

    def __getattr__(self, name: str) -> Any:
        return self._replaced[name] if name in self._replaced else getattr(self._real, name)


_SYMPY_CALLS = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Mod", "Abs", "floor", "ceiling",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan", "StrictGreaterThan", "LessThan",
    "GreaterThan", "And", "Or", "Not", "Piecewise", "ITE",
})
_FILE_OPS = frozenset({"aten::from_file"})  # operators that open a path named in the graph


def _check_sym_expr(text: str, names: Any) -> str | None:
    """Why ``text`` is not a plain sympy expression as torch writes it (srepr), or None when it is."""
    import ast
    import builtins

    import sympy

    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError) as exc:
        return f"an unparsable symbolic expression ({type(exc).__name__})"
    binary = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and (node.func.id in _SYMPY_CALLS or node.func.id in names)):
                return f"a call in a symbolic expression: {ast.unparse(node.func)[:80]}"
            if any(k.arg is None or not isinstance(k.value, ast.Constant) for k in node.keywords):
                return "a computed keyword argument in a symbolic expression"
        elif isinstance(node, ast.Name):
            known = node.id in _SYMPY_CALLS or node.id in names or node.id in ("oo", "zoo", "nan", "true", "false")
            if not known and (node.id.startswith("_") or hasattr(builtins, node.id) or hasattr(sympy, node.id)):
                return f"the name {node.id!r} in a symbolic expression"
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool, type(None))):
                return f"a constant of type {type(node.value).__name__} in a symbolic expression"
        elif not isinstance(node, (ast.Expression, ast.Load, ast.keyword, ast.Tuple, ast.BinOp, ast.UnaryOp, ast.Compare,
                                   ast.BoolOp, ast.USub, ast.UAdd, ast.Not, ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt,
                                   ast.LtE, ast.Gt, ast.GtE, *binary)):
            return f"{type(node).__name__} syntax in a symbolic expression"
    return None


@contextlib.contextmanager
def _no_code_from_file(refused: list[str]):
    """Inside: torch.load is weights-only and what would run code from a .pt2 file raises _Refused instead."""
    import importlib
    import sys

    import sympy
    import torch
    from torch._export.serde import serialize
    from torch.export.pt2_archive import _package
    from torch.utils import _pytree

    def refuse(what: str) -> Any:
        refused.append(what)
        raise _Refused(what)

    def weights_only_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        try:
            return real_load(f, *args, **kwargs)
        except Exception as exc:
            return refuse(f"a pickle that needs Python code to load ({_reason(exc)})")

    def sympify(expr: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(expr, str):
            why = _check_sym_expr(expr, kwargs.get("locals") or {})
            if why:
                refuse(f"{why}: {expr[:120]!r}")
        return sympy.sympify(expr, *args, **kwargs)

    def imported_only(name: str, package: Any = None) -> Any:
        return sys.modules[name] if name in sys.modules else refuse(f"an import of module {name!r}")

    real_load = torch.load
    patches = [
        (torch, "load", weights_only_load),
        (torch._C, "_pickle_load_obj", lambda *a, **k: refuse("a TorchScript custom object")),
        (_package, "pickle", _Override(_package.pickle, loads=lambda *a, **k: refuse("a pickled Python object"))),
        (_pytree, "importlib", _Override(importlib, import_module=imported_only)),
        (serialize, "sympy", _Override(sympy, sympify=sympify)),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def _load_program(path: Path) -> Any:
    """``torch.export.load`` allowing tensors, JSON and plain shape expressions only; the graph may call operators only."""
    import zipfile

    import torch

    try:
        with zipfile.ZipFile(path) as z:
            members = z.namelist()
    except (OSError, zipfile.BadZipFile):
        members = []  # torch.export.load says what is wrong with it
    native = [m for m in members if "aotinductor" in m.split("/")]
    refused: list[str] = []
    if native:
        refused.append(f"AOTInductor native code ({native[0]})")
    else:
        try:
            with _no_code_from_file(refused):
                program = torch.export.load(str(path))
        except Exception as exc:
            if not refused:
                raise InputConfigurationError(f"Unable to load torch.export program {path.name}: {type(exc).__name__}: {exc}") from exc
    if not refused:
        refused += _foreign_calls(program)
    if refused:
        raise InputConfigurationError(
            f"Unable to load torch.export program {path.name}: it asks to run code from the archive "
            f"({'; '.join(dict.fromkeys(refused))}). neocompile never unpickles Python objects from an untrusted archive "
            f"or runs code shipped in it. {HOW_TO_SAVE}"
        )
    return program


def _foreign_calls(program: Any) -> list[str]:
    """The first graph node (in the program and its subgraphs) that calls anything but a PyTorch operator."""
    import operator

    import torch
    from torch._export.serde import serialize

    allowed = set(getattr(serialize, "_SYM_OPS", ())) | {operator.getitem}  # what torch itself writes for shape math
    ops = (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)
    for module in program.graph_module.modules():
        for node in module.graph.nodes if isinstance(module, torch.fx.GraphModule) else ():
            target = node.target
            if node.op in ("placeholder", "get_attr", "output"):
                continue
            if node.op == "call_function":
                if isinstance(target, ops):
                    name = getattr(target, "_qualified_op_name", None) or getattr(getattr(target, "_schema", None), "name", "")
                    if name not in _FILE_OPS:
                        continue
                elif isinstance(target, Hashable) and target in allowed:
                    continue
            what = f"{getattr(target, '__module__', None) or ''}.{getattr(target, '__name__', None) or target}".lstrip(".")
            return [f"graph node {node.name!r} calls {what} ({node.op}), not a PyTorch operator"]
    return []
