"""The warm builder: one pool of build workers started once per tuning run and reused for every batch.

MetaSchedule's ``LocalBuilder`` starts a new worker pool for every batch of candidates, and its build function
imports ``tvm.s_tir.tensor_intrin`` in each new worker: about 50 s (over two minutes on a loaded 2-core machine)
per batch, mostly the TVMScript parsing of CUDA intrinsics no CPU build uses. Here the workers start once,
import TVM once, and build with a function that imports nothing more: a candidate arrives already scheduled
(tensorized blocks carry their intrinsic's body), so building it needs no intrinsic registry.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind


def _warm_up() -> None:
    """Worker initializer: pay TVM's import and the build pipeline's first use before the first candidate."""
    import tvm.s_tir.transform  # noqa: F401  (the import is the point)


def _build(mod: Any, target: Any, link_for: Any) -> str:
    """Build one candidate into a shared library the runner loads; return its path."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    # As MetaSchedule's default_build: the runner feeds random weights, so the packing block is not timed.
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    library = tvm.tirx.build(mod, target=target)
    path = os.path.join(tempfile.mkdtemp(prefix="neocompile-candidate-"), "candidate.so")
    if link_for is None:
        library.export_library(path)
    else:  # for a device reached over RPC: its own toolchain, as its packages are linked
        from neocompile.device import toolchain

        library.export_library(path, fcompile=toolchain.linker(link_for))
    return path


@derived_object
class WarmBuilder(PyBuilder):
    """A MetaSchedule builder whose worker processes live as long as the builder (``close()`` ends them)."""

    def __init__(self, max_workers: int | None = None, timeout_sec: float = 60.0, link_for: Any = None) -> None:
        """``link_for``: the registry Target whose zig toolchain links the candidates (a device timed over RPC);
        None links them with the system compiler, for this machine."""
        super().__init__()
        self.max_workers = max_workers or len(os.sched_getaffinity(0))
        self.timeout_sec = timeout_sec
        self.link_for = link_for
        self.pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=timeout_sec, initializer=_warm_up)
        self.batches = 0

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        self.batches += 1
        results = []
        jobs = [(item.mod, item.target, self.link_for) for item in build_inputs]
        for outcome in self.pool.map_with_error_catching(lambda job: _build(*job), jobs):
            if outcome.status == StatusKind.COMPLETE:
                results.append(BuilderResult(outcome.value, None))
            elif outcome.status == StatusKind.TIMEOUT:
                results.append(BuilderResult(None, f"WarmBuilder: timeout, killed after {self.timeout_sec:g} s"))
            else:
                results.append(BuilderResult(None, f"WarmBuilder: {outcome.value}"))
        return results

    def close(self) -> None:
        self.pool.shutdown()
