"""neocompile.cpu.fast_math: TVM's FastMathTransform, also for modules whose functions call each other (loops)."""
from __future__ import annotations

import pytest
import tvm
from tvm import relax

from neocompile.cpu.fast_math import fast_math


def _module(call_helper: bool) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 8), "float32"))
    helper = None
    if call_helper:
        y = relax.Var("y", relax.TensorType((2, 8), "float32"))
        with bb.function("helper", [y]):
            with bb.dataflow():
                out = bb.emit_output(bb.emit(relax.op.exp(y)))
            bb.emit_func_output(out)
        helper = bb.get().get_global_var("helper")
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.exp(x))
            if helper is not None:
                a = bb.emit(relax.Call(helper, [a]))
            b = bb.emit(relax.op.tanh(a))
            c = bb.emit(relax.op.nn.softmax(b))
            out = bb.emit_output(bb.emit(relax.op.erf(c)))
        bb.emit_func_output(out)
    return bb.get()


def test_it_rewrites_as_tvms_pass_does():
    mod = _module(call_helper=False)
    tvm.ir.assert_structural_equal(fast_math(mod), relax.transform.FastMathTransform()(mod))


def test_it_rewrites_modules_whose_functions_call_each_other():
    mod = _module(call_helper=True)
    with pytest.raises(AttributeError):  # TVM 0.27's pass reads call.op.name of the call to "helper"
        relax.transform.FastMathTransform()(mod)
    text = fast_math(mod).script()
    assert "R.exp(" not in text and "R.tanh(" not in text and "R.nn.softmax(" not in text
    assert "helper" in text


def _sigmoid_module(dtype: str) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((3, 77), dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.multiply(x, relax.op.sigmoid(x))))  # SiLU
        bb.emit_func_output(out)
    return bb.get()


def test_float32_sigmoid_uses_the_fast_exp_and_stays_exact_enough():
    """TVM lowers sigmoid to libm's scalar expf per element; a float32 one is rewritten with TOPI's fast_exp, over
    the whole range (saturating at both ends) within 1e-5 of the exact value."""
    import numpy as np

    mod = fast_math(_sigmoid_module("float32"))
    text = mod.script()
    assert "R.sigmoid(" not in text and "fast_exp" in text, text
    x = np.concatenate([np.linspace(-100, 100, 201), np.linspace(-6, 6, 30)]).astype("float32").reshape(3, 77)
    with tvm.target.Target("llvm"):
        vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = x / (1 + np.exp(-x.astype("float64")))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-30)


def test_sigmoid_of_other_precisions_is_left_to_tvm():
    assert "R.sigmoid(" in fast_math(_sigmoid_module("float16")).script()
