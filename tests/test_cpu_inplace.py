"""In-place kernels (neocompile.cpu.inplace): a residual add's kernel writes over the shortcut tensor that dies with it,
and only where nothing can see the difference."""
from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from neocompile.cpu import pipeline  # noqa: E402
from neocompile.cpu.inplace import use_inplace  # noqa: E402

TARGET = {"kind": "llvm", "mcpu": "znver3"}
SHAPE = (1, 6, 5, 16)


def _conv(x, seed: int, window: int = 1):
    weight = np.random.default_rng(seed).standard_normal((16, 16, window, window)).astype("float32") * 0.1
    return relax.op.nn.conv2d(x, relax.const(weight), padding=window // 2, data_layout="NHWC")


def _module(build) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(SHAPE, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(build(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def _bottleneck(bb, x):
    """relu(conv(relu(conv(a))) + a), a made by a kernel: the last kernel may write over ``a``."""
    a = bb.emit(relax.op.nn.relu(bb.emit(_conv(x, 0))))
    b = bb.emit(relax.op.nn.relu(bb.emit(_conv(a, 1, window=3))))
    return bb.emit(relax.op.nn.relu(relax.op.add(bb.emit(_conv(b, 2)), a)))


def _shortcut_also_convolved(bb, x):
    """relu(conv3x3(a) + a): the kernel reads ``a`` through its window too, so writing over it would corrupt it."""
    a = bb.emit(relax.op.nn.relu(bb.emit(_conv(x, 0))))
    return bb.emit(relax.op.nn.relu(relax.op.add(bb.emit(_conv(a, 1, window=3)), a)))


def _shortcut_used_after(bb, x):
    """The shortcut is read again after the add, by a conv: it must survive the add's kernel (which may still
    write over a tensor of its own that dies there)."""
    a = bb.emit(relax.op.nn.relu(bb.emit(_conv(x, 0))))
    b = bb.emit(relax.op.nn.relu(bb.emit(_conv(a, 1, window=3))))
    c = bb.emit(relax.op.nn.relu(relax.op.add(bb.emit(_conv(b, 2)), a)))
    return bb.emit(relax.op.multiply(c, bb.emit(_conv(a, 3, window=3))))


def _shortcut_viewed(bb, x):
    """A reshape of the shortcut is read after the add: writing over the shortcut would change it."""
    a = bb.emit(relax.op.nn.relu(bb.emit(_conv(x, 0))))
    view = bb.emit(relax.op.reshape(a, (1, 30, 16)))
    b = bb.emit(relax.op.nn.relu(bb.emit(_conv(a, 1, window=3))))
    c = bb.emit(relax.op.nn.relu(relax.op.add(bb.emit(_conv(b, 2)), a)))
    return bb.emit(relax.op.add(relax.op.reshape(c, (1, 30, 16)), view))


def _input_as_shortcut(bb, x):
    """The model's own input is the shortcut: the caller's tensor is never written."""
    return bb.emit(relax.op.nn.relu(relax.op.add(bb.emit(_conv(x, 2)), x)))


def _scheduled(mod: tvm.IRModule) -> tuple[tvm.IRModule, pipeline.KernelReport]:
    report = pipeline.KernelReport()
    with tvm.target.Target(TARGET):
        for step in pipeline.weight_steps(pipeline.CpuInfo(256, 16), report):
            mod = step(mod)
            while getattr(step, "unfinished", False):
                mod = step(mod)
    return mod, report


def _inplace_calls(mod: tvm.IRModule) -> int:
    op = tvm.ir.Op.get("relax.call_tir_inplace")
    found = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(e) if isinstance(e, relax.Call) and e.op.same_as(op) else None)
    return len(found)


def _run_twice(mod: tvm.IRModule) -> None:
    """The pipeline's package equals TVM's own build, and its first output survives a second run."""
    target = tvm.target.Target(TARGET)
    ours = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=pipeline.relax_pipeline(
        pipeline.CpuInfo(256, 16), pipeline.KernelReport())), tvm.cpu())
    plain = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    rng = np.random.default_rng(5)
    x1, x2 = (rng.standard_normal(SHAPE).astype("float32") for _ in range(2))
    first = ours["main"](tvm.runtime.tensor(x1))
    kept = first.numpy().copy()
    second = ours["main"](tvm.runtime.tensor(x2))
    np.testing.assert_allclose(kept, plain["main"](tvm.runtime.tensor(x1)).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(second.numpy(), plain["main"](tvm.runtime.tensor(x2)).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(first.numpy(), kept)


def test_residual_kernel_writes_over_its_dying_shortcut():
    mod, report = _scheduled(_module(_bottleneck))
    assert _inplace_calls(mod) == 1, mod["main"].script()
    inplace = [name for name in report.kernels if name.endswith("_inplace")]
    assert len(inplace) == 1 and "add" in inplace[0], report.kernels
    assert report.kernels[inplace[0]].startswith("template: conv2d"), report.kernels
    _run_twice(_module(_bottleneck))


def _overwritten_later_read(mod: tvm.IRModule) -> list[str]:
    """In-place calls whose overwritten argument is read by a later binding (there must be none)."""
    op = tvm.ir.Op.get("relax.call_tir_inplace")
    bindings = [b for block in mod["main"].body.blocks for b in block.bindings]
    bad = []
    for i, binding in enumerate(bindings):
        call = binding.value
        if isinstance(call, relax.Call) and call.op.same_as(op):
            target = call.args[1].fields[int(call.attrs.inplace_indices[0])]
            for later in bindings[i + 1:]:
                used = []
                relax.analysis.post_order_visit(later.value, lambda e: used.append(e) if e.same_as(target) else None)
                if used:
                    bad.append(f"{binding.var.name_hint} writes over {target.name_hint}, read by {later.var.name_hint}")
    return bad


@pytest.mark.parametrize("build, inplace", [(_shortcut_also_convolved, 0), (_shortcut_used_after, None),
                                            (_shortcut_viewed, 0), (_input_as_shortcut, 0)])
def test_no_kernel_writes_over_a_tensor_still_read(build, inplace):
    mod, _ = _scheduled(_module(build))
    assert not _overwritten_later_read(mod), mod["main"].script()
    if inplace is not None:
        assert _inplace_calls(mod) == inplace, mod["main"].script()
    _run_twice(_module(build))


def test_a_module_without_candidates_is_returned_as_it_is():
    mod, _ = _scheduled(_module(_input_as_shortcut))
    assert use_inplace(mod) is mod
