"""The job's MXNet reference: the checkpoint run by real mxnet in a side interpreter, when one exists.

mxnet 1.9.1 needs numpy < 1.24, so it cannot be imported beside neocompile. Where a Python with mxnet is at hand —
``NEOCOMPILE_MXNET_PYTHON``, or the ``.venv-mxnet`` that ``make test`` builds beside a source checkout — the load
stage runs ``record`` in that interpreter, in a load sandbox of its own (sandbox.py: its limits, no network, no
secrets, only neocompile itself on its import path). ``mx.nd.load`` reads arrays (no pickle) and the symbol JSON only
names built-in operators; the converter has refused a graph with ``Custom`` operators (Python code) before this runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

ENV = "NEOCOMPILE_MXNET_PYTHON"
#: The side environment of a source checkout (Makefile: $(STAMPS)/mxnet-venv).
CHECKOUT_PYTHON = Path(__file__).resolve().parents[3] / ".venv-mxnet" / "bin" / "python"


def interpreter() -> tuple[Path | None, str]:
    """The Python with mxnet to use and where it came from; ``(None, why)`` when there is none."""
    given = os.environ.get(ENV)
    if given:
        path = Path(given)
        return (path, ENV) if os.access(path, os.X_OK) else (None, f"{ENV}={given} is not an executable")
    if os.access(CHECKOUT_PYTHON, os.X_OK):
        return CHECKOUT_PYTHON, "the checkout's .venv-mxnet"
    return None, (f"mxnet 1.9.1 cannot be installed beside numpy >= 1.24 and no side interpreter with it was found: "
                  f"set {ENV} to a Python with mxnet 1.9.1 (`make test` builds .venv-mxnet in a source checkout)")


def record(args: dict[str, Any], specs: Sequence[Any], arrays: Sequence[Any]) -> list[Any]:
    """In the side interpreter: bind the symbol at the inputs' shapes (shape inference fills in labels such as
    SoftmaxOutput's), copy the saved arrays in, run forward in inference mode; every output, in the symbol's order."""
    import mxnet as mx

    sym = mx.sym.load(args["symbol"])
    saved = mx.nd.load(args["params"])
    params = {k[4:]: v for k, v in saved.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in saved.items() if k.startswith("aux:")}
    feed = {s.name: a for s, a in zip(specs, arrays)}
    exe = sym.simple_bind(mx.cpu(), grad_req="null", type_dict={n: a.dtype for n, a in feed.items()},
                          **{n: a.shape for n, a in feed.items()})
    exe.copy_params_from(params, aux, allow_extra_params=True)
    for name, array in feed.items():
        exe.arg_dict[name][:] = array
    return [out.asnumpy() for out in exe.forward(is_train=False)]
