"""TorchScript -> ``torch.export`` program, for the given static input shapes.

TVM has no TorchScript importer. torch's own converter (``torch._export.converter.TS2EPConverter``, a private API:
torch is pinned) turns a TorchScript graph into an FX graph and exports it, but as torch ships it it keeps every
shape symbolic, so what TorchScript computes from sizes (``x.size(1)`` -> tensor -> ``int``, as traced
``transformers`` models do) becomes data-dependent symbols and Python ``operator.or_``/``eq`` nodes that TVM
cannot import; it refuses scripted modules whose ``forward`` has optional trailing arguments
(``nn.TransformerEncoder``'s masks); and it turns every ``prim::If`` into ``torch.cond`` even where the condition
is a constant (an LSTM's ``hx is None``), which it then cannot convert. Here the graph is specialised to the
job's shapes first: optional arguments the user did not give take their defaults, input shapes are propagated
(through the fused transformer layers too), and sizes, dtypes, devices and the conditions that depend only on
them are folded to constants (TorchScript's own shape analysis, list-mutation removal, peephole and constant
propagation passes, plus ``_fold_queries``), with ``torch.is_grad_enabled()`` and autocast read as off (the model
runs for inference, as the reference run does). Then the converter builds the FX graph, exported with static
shapes. Nothing here runs Python from the archive: the passes read and rewrite the TorchScript graph only.
"""
from __future__ import annotations

from typing import Any, Sequence

#: Graph queries of the running environment, fixed to what an inference run sees.
_INFERENCE_CONSTANTS = {"aten::is_grad_enabled": False, "aten::is_autocast_enabled": False,
                        "aten::is_autocast_cpu_enabled": False, "aten::_is_any_autocast_enabled": False,
                        "prim::is_scripting": True}


#: Operators whose (first) output has the shape and dtype of their first input.
_SAME_TYPE_AS_INPUT = {"aten::_transformer_encoder_layer_fwd", "aten::_native_multi_head_attention"}


class TorchScriptInputError(ValueError):
    """The inputs given do not fit the TorchScript ``forward`` (count, or a required argument left out)."""


def forward_arguments(module: Any) -> list[Any]:
    """The ``forward`` schema's arguments after ``self``."""
    return list(module.forward.schema.arguments)[1:]


def to_exported_program(module: Any, examples: Sequence[Any]) -> Any:
    """Convert a loaded ScriptModule to an ``ExportedProgram`` specialised to ``examples``' shapes and dtypes."""
    return _converter_class()(module, tuple(examples)).convert()


def _jit_graph(module: Any, examples: tuple) -> tuple[Any, list[Any]]:
    """``module.forward``'s graph, frozen (parameters kept as graph inputs), with the optional arguments past
    ``examples`` bound to their defaults, input types set from ``examples``, and what depends only on shapes folded.

    What torch's converter does in ``_create_jit_graph``, plus the binding and the folding."""
    import torch
    from torch.onnx._internal.torchscript_exporter.utils import _get_param_count_list

    arguments = forward_arguments(module)
    if len(examples) > len(arguments):
        raise TorchScriptInputError(
            f"forward takes {len(arguments)} input(s) ({', '.join(a.name for a in arguments)}), {len(examples)} given")
    missing = [a.name for a in arguments[len(examples):] if not a.has_default_value()]
    if missing:
        raise TorchScriptInputError(f"forward needs input(s) {', '.join(missing)} too, which have no default value "
                                    f"(forward takes {', '.join(a.name for a in arguments)})")
    graph = module.forward.graph
    torch._C._jit_pass_onnx_function_substitution(graph)
    frozen = torch._C._freeze_module(module._c, preserveParameters=True)
    frozen, params = torch._C._jit_onnx_list_model_parameters(frozen)
    method_graph = frozen._get_method("forward").graph
    _bind_defaults(method_graph, arguments, len(examples))
    in_vars, _ = torch.jit._flatten(tuple(examples) + tuple(params))
    param_count_list = _get_param_count_list(method_graph, tuple(examples) + tuple(params))
    graph = torch._C._propagate_and_assign_input_shapes(method_graph, tuple(in_vars), param_count_list, False, False)
    _fold_for_shapes(graph, tuple(in_vars))
    return graph, params


def _bind_defaults(graph: Any, arguments: list[Any], given: int) -> None:
    """Replace the graph inputs of arguments past ``given`` by constants holding their default values (the frozen
    graph takes the arguments, then the parameters)."""
    inputs = list(graph.inputs())
    first = next(iter(graph.nodes()), None)
    for index in range(len(arguments) - 1, given - 1, -1):  # from the last, so that input indices stay valid
        if first is not None:
            graph.setInsertPoint(first)
        inputs[index].replaceAllUsesWith(graph.insertConstant(arguments[index].default_value))
        graph.eraseInput(index)
    graph.setInsertPoint(graph.return_node())


def _fold_for_shapes(graph: Any, inputs: tuple) -> None:
    """Propagate the inputs' shapes through ``graph`` and fold sizes, dtypes, devices, conditions on them and
    environment queries to constants, until nothing changes. Best effort: a pass TorchScript cannot run on this
    graph is skipped (the converter then meets what is left)."""
    import torch

    before = None
    for _ in range(8):
        for run in (lambda: torch._C._jit_pass_complete_shape_analysis(graph, inputs, False),
                    lambda: _type_fused_layers(graph),
                    lambda: _fold_queries(graph),
                    lambda: torch._C._jit_pass_remove_mutation(graph),  # lists built by append, then any()/all()
                    lambda: torch._C._jit_pass_peephole_list_idioms(graph, True),
                    lambda: torch._C._jit_pass_peephole(graph, False),
                    lambda: torch._C._jit_pass_constant_propagation(graph),
                    lambda: torch._C._jit_pass_dce(graph)):
            try:
                run()
            except RuntimeError:
                continue
        now = str(graph)
        if now == before:
            break
        before = now


def _nodes(block: Any):
    for node in list(block.nodes()):
        yield node
        for sub in node.blocks():
            yield from _nodes(sub)


def _query_value(node: Any) -> tuple[bool, Any]:
    """(True, value) when ``node`` asks a question the input's static type answers, else (False, None)."""
    import torch

    kind = node.kind()
    if kind in _INFERENCE_CONSTANTS:
        return True, _INFERENCE_CONSTANTS[kind]
    inputs = list(node.inputs())
    if not inputs or not isinstance(inputs[0].type(), torch._C.TensorType):
        return False, None
    ttype, producer = inputs[0].type(), inputs[0].node().kind()
    if kind == "prim::is_nested":
        # Dense inputs stay dense; only torch's nested-tensor constructors make nested tensors.
        return ("nested" not in producer), False
    if kind in ("prim::is_cuda", "prim::is_xpu", "prim::is_mps", "prim::is_meta", "prim::is_quantized",
                "prim::is_sparse", "prim::requires_grad", "prim::is_mkldnn", "prim::is_vulkan"):
        return True, False
    if kind == "prim::device":
        return True, torch.device("cpu")
    dtype, sizes = ttype.dtype(), ttype.sizes()
    if kind == "prim::dtype" and dtype is not None:
        return True, dtype
    if kind == "aten::is_floating_point" and dtype is not None:
        return True, dtype.is_floating_point
    if kind == "aten::dim" and sizes is not None:
        return True, len(sizes)
    if kind == "aten::size" and sizes is not None and all(isinstance(d, int) for d in sizes):
        if len(inputs) == 1:
            return True, list(sizes)
        dim = inputs[1].toIValue() if inputs[1].node().kind() == "prim::Constant" else None
        if isinstance(dim, int) and -len(sizes) <= dim < len(sizes):
            return True, sizes[dim]
    return False, None


def _type_fused_layers(graph: Any) -> None:
    """TorchScript's shape analysis has no rule for the fused layers, so what follows them (the next layer's
    ``src.dim() != 3``) stays unknown: their output has the type of their input."""
    import torch

    for node in graph.nodes():
        if node.kind() in _SAME_TYPE_AS_INPUT and isinstance(node.inputsAt(0).type(), torch._C.TensorType):
            node.outputsAt(0).setType(node.inputsAt(0).type())


def _fold_queries(graph: Any) -> None:
    for node in _nodes(graph):
        if node.outputsSize() != 1:
            continue
        known, value = _query_value(node)
        if known:
            graph.setInsertPoint(node)
            node.output().replaceAllUsesWith(graph.insertConstant(value))
    graph.setInsertPoint(graph.return_node())


def _converter_class() -> type:
    import torch
    from torch._export import converter

    class Converter(converter.TS2EPConverter):
        """torch's TS2EPConverter on the specialised graph, exporting with static shapes."""

        def __init__(self, ts_model: Any, sample_args: tuple):
            # As TS2EPConverter.__init__, with _jit_graph for _create_jit_graph, and parameters told from buffers
            # by identity (torch compares every pair of tensors by value).
            self.ts_model = ts_model
            self.ts_graph, self.params = _jit_graph(ts_model, sample_args)
            self.sample_args = sample_args
            self.sample_kwargs = None
            self.name_to_param: dict[str, Any] = {}
            self.name_to_buffer: dict[str, Any] = {}
            params = {id(p) for p in ts_model.parameters()}
            for name, tensor in ts_model.state_dict().items():
                (self.name_to_param if id(tensor) in params else self.name_to_buffer)[name] = tensor
            self.name_to_non_tensor_attributes: dict[str, Any] = {}
            self.name_to_constant: dict[str, Any] = {}
            self.lift_get_attr()

        def retrace_as_exported_program(self, gm: Any, name_to_constant: dict[str, Any]) -> Any:
            # As TS2EPConverter's, without Dim.AUTO: the job's shapes are the model's shapes.
            from torch.export.graph_signature import InputKind

            ep = torch.export._trace._export(gm, self.sample_args, strict=False, pre_dispatch=True)
            ep._constants.update({k: v for k, v in name_to_constant.items()
                                  if isinstance(v, (torch.Tensor, torch.ScriptObject))})
            for k in name_to_constant:
                ep.state_dict.pop(k, None)
            for spec in ep.graph_signature.input_specs:
                if spec.kind == InputKind.BUFFER and spec.target in name_to_constant:
                    spec.kind = InputKind.CONSTANT_TENSOR
                    spec.persistent = None
            ep.verifier().check(ep)
            return ep

    return Converter

