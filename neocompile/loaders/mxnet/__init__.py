"""MXNet loader: a ``<prefix>-symbol.json`` + ``<prefix>-NNNN.params`` checkpoint, read without mxnet.

mxnet 1.9.1 cannot be installed beside numpy >= 1.24 (so not in neocompile's environment), and its ONNX exporter
drops BatchNorm's ``fix_gamma``. So the symbol JSON is converted to Relax here (``symbol`` + ``ops``) and the
``.params`` file is read with numpy (``params``; never pickle). Files are matched as Neo does (neo-loader
``mxnet_model_loader.py``): one symbol ``.json`` apart from SageMaker's auxiliary JSON files (several only when
exactly one starts with ``model0``, Autopilot's cross-validation models), the ``.params`` files sharing its prefix,
the highest 4-digit epoch when there are several, and keys that must start ``arg:`` / ``aux:``.

Verification: mxnet cannot be imported here, so the reference is real mxnet in a side interpreter when one exists
(``reference``: ``NEOCOMPILE_MXNET_PYTHON``, or a checkout's ``.venv-mxnet``); without one, ``reference`` is None and
the job's verification says that no framework reference exists (the manifest's Model.Details.Reference says why).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ...archive import visible_files
from ...datainput import TensorSpec, check_against_model
from ...errors import InputConfigurationError
from ..base import LoadedModel, Loader, outputs_from_relax

#: JSON files SageMaker puts beside a model that are not its symbol (neo-loader's exclusion list).
AUXILIARY_JSON = ("model-shapes.json", "hyperparams.json", "amba_config.json", "model-metadata.json")
AUTOPILOT_PREFIX = "model0"
ROUTE = "mxnet symbol JSON + .params -> neocompile.loaders.mxnet (numpy .params reader, per-operator Relax converters)"
EXPORT_HINT = ("Please use HybridBlock.export() or gluoncv.utils.export_block() to export your model instead of "
               "Block.save_parameters()")
_EPOCH = re.compile(r"-(\d{4})\.params$")


def _prefix(symbol: Path) -> str:
    name = symbol.name
    return name[: -len("-symbol.json")] if name.endswith("-symbol.json") else name[: -len(".json")]


def find_checkpoint(root: Path) -> tuple[Path, Path, str]:
    """``(symbol file, params file, note)`` by Neo's rules; the note says which epoch was picked among several."""
    files = visible_files(root)
    listed = lambda paths: ", ".join(str(p.relative_to(root)) for p in paths)  # noqa: E731
    symbols = [p for p in files if p.suffix.lower() == ".json" and p.name not in AUXILIARY_JSON]
    if not symbols:
        raise InputConfigurationError(
            "No symbol file found for MXNet model. Please make sure the framework you select is correct. Expected "
            "a <prefix>-symbol.json beside its <prefix>-NNNN.params (HybridBlock.export() or "
            f"Module.save_checkpoint()); found: {listed(files) or 'no files'}")
    if len(symbols) > 1:
        autopilot = [p for p in symbols if p.name.startswith(AUTOPILOT_PREFIX)]
        if len(autopilot) != 1:
            raise InputConfigurationError(
                "Only one symbol file is allowed for MXNet model. Please make sure the framework you select is "
                f"correct. Found {len(symbols)}: {listed(symbols)} (the JSON files {', '.join(AUXILIARY_JSON)} are "
                "ignored)")
        symbols = autopilot
    symbol = symbols[0]
    params = [p for p in files if p.suffix.lower() == ".params"]
    if not params:
        raise InputConfigurationError(
            f"No parameter file found for MXNet model. Please make sure the framework you select is correct. "
            f"Expected a {_prefix(symbol)}-NNNN.params beside {symbol.relative_to(root)}")
    prefix = _prefix(symbol)
    matching = [p for p in params if p.name.startswith(prefix)]
    # Neo matches any name starting with the prefix; files of exactly this prefix win over e.g. "<prefix>50-...".
    exact = [p for p in matching if re.fullmatch(re.escape(prefix) + r"(-\d+)?\.params", p.name)]
    matching = exact or matching
    if not matching:
        raise InputConfigurationError(
            f"No parameter file found for MXNet model: {symbol.relative_to(root)} Please make sure the prefix of "
            f"params file match the prefix of symbol file. Expected {prefix}-NNNN.params; found {listed(params)}")
    if len(matching) == 1:
        return symbol, matching[0], ""

    def epoch(p: Path) -> int:
        m = _EPOCH.search(p.name)
        return int(m.group(1)) if m else -1

    chosen = max(matching, key=epoch)
    if sum(epoch(p) == epoch(chosen) for p in matching) > 1:
        raise InputConfigurationError(
            f"Only one parameter file is allowed for MXNet model per epoch: {listed(matching)} share epoch "
            f"{epoch(chosen)}; expected one {prefix}-NNNN.params per epoch")
    return symbol, chosen, (f"multiple parameter files ({listed(matching)}): {chosen.relative_to(root)}, the "
                            "highest epoch, is used")


def split_params(arrays: dict[str, Any], name: str) -> dict[str, Any]:
    """``arg:``/``aux:`` keys without their prefix; any other key is Neo's "use HybridBlock.export()" error."""
    out = {}
    for key, value in arrays.items():
        kind, sep, rest = key.partition(":")
        if not sep or kind not in ("arg", "aux"):
            raise InputConfigurationError(
                f"Framework can't load the MXNet model: {EXPORT_HINT}. {name} has the key '{key}'; expected keys "
                "starting with 'arg:' or 'aux:'")
        out[rest] = value
    return out


class MXNetLoader(Loader):
    name = "MXNET"
    suffixes = (".json", ".params")
    layout = "NCHW"
    example = '{"data": [1, 3, 224, 224]}'
    side_reference = "neocompile.loaders.mxnet.reference:record"

    @staticmethod
    def side_python() -> tuple[Any, str]:
        from .reference import interpreter

        return interpreter()

    def find_model(self, root: Path) -> Path:
        """The symbol file (the params file is matched to it again in ``load``)."""
        return find_checkpoint(Path(root))[0]

    def load(self, path: Path, shapes: dict[str, tuple[int, ...]] | None, options: dict[str, Any]) -> LoadedModel:
        from . import params as params_mod
        from . import symbol as symbol_mod

        path = Path(path)
        root = _archive_root(path)
        symbol_file, params_file, note = find_checkpoint(root)
        graph = symbol_mod.read(symbol_file)
        try:
            arrays = params_mod.read(params_file)
        except (OSError, params_mod.ParamsFormatError) as exc:
            raise InputConfigurationError(f"Framework can't load the MXNet model: {exc}") from exc
        weights = split_params(arrays, params_file.name)
        declared = symbol_mod.data_inputs(graph, weights)
        _check_parameters(graph, declared, shapes)
        hint = f"Input shapes should be provided in {self.layout} format. For example, {self.example}"
        shapes = check_against_model(shapes, declared, self.name, self.layout, self.example)
        inputs = [TensorSpec(s.name, s.dtype, tuple(shapes[s.name])) for s in declared]
        mod = symbol_mod.to_relax(graph, weights, inputs, hint, ROUTE)
        epoch = _EPOCH.search(params_file.name)
        version = f"mxnet {graph.version or '(version not recorded)'} checkpoint {symbol_file.name} + {params_file.name}"
        if epoch:
            version += f", epoch {int(epoch.group(1))}"
        if note:
            version += f"; {note}"
        return LoadedModel(
            mod=mod,
            inputs=inputs,
            outputs=outputs_from_relax(mod, graph.output_names()),
            reference=None,  # recorded in a side interpreter: side_reference
            framework=self.name,
            framework_version=version,
            route=ROUTE,
            data_input_config={k: list(v) for k, v in shapes.items()},
            model_details={
                "Checkpoint": {"Symbol": symbol_file.as_posix(), "Params": params_file.as_posix(),
                               "Epoch": int(epoch.group(1)) if epoch else None, "SavedBy": graph.version or None},
            },
            side_reference_args={"symbol": symbol_file.as_posix(), "params": params_file.as_posix()},
        )


def _archive_root(path: Path) -> Path:
    """The extraction folder the symbol file was found in: the pipeline passes paths relative to it (the sandbox
    child works in it), or absolute paths below a folder that holds the params too."""
    if not path.is_absolute():
        return Path(".")
    return path.parent


#: Operators whose inputs after the first are parameters.
_WEIGHTED = {"Convolution", "Deconvolution", "FullyConnected", "BatchNorm", "BatchNorm_v1", "LeakyReLU", "UpSampling"}


def _check_parameters(graph: Any, declared: list[TensorSpec], shapes: dict | None) -> None:
    """A variable read as an operator's weight but missing from the .params file is a broken checkpoint, not an
    input the user forgot to shape."""
    names = {s.name for s in declared} - set(shapes or {})
    for node in graph.nodes:
        if node.op not in _WEIGHTED:
            continue
        for position, (nid, _) in enumerate(graph.used_inputs(node)):
            var = graph.nodes[nid]
            if position > 0 and var.op == "null" and var.name in names:
                raise InputConfigurationError(
                    f"Framework can't load the MXNet model: the parameter file has no 'arg:{var.name}' or "
                    f"'aux:{var.name}', which {node.op} '{node.name}' reads (input {position}); the symbol and "
                    "params files do not belong together")
