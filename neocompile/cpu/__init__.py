"""CPU kernels: schedule templates for the heavy operators, the fallback for the rest, and the Relax pipeline
that attaches them.

TVM 0.27's default CPU pipeline schedules nothing (conv and matmul come out as serial scalar loops). This
package gives every fused PrimFunc a schedule chosen by target data (``targets/*.json`` ``cpu.vector_bits``
and ``cpu.vector_registers``), in this order:

- ``templates``: register-tiled, vectorized, parallel kernels for multiply-accumulate anchors (conv2d of any
  kernel size, stride and group count, depthwise conv, dense / matmul / batch matmul) with the elementwise
  epilogue fused into the tile and constant weights packed at compile time into the layout the kernel reads;
- ``s_tir.dlight`` CPU rules for row reductions (softmax, layer norm, GEMV);
- ``fallback``: parallel outer loops and vectorized inner loops for everything else (pooling, elementwise,
  layout ops), never the naive serial nest.

``pipeline.relax_pipeline`` is what ``compiler.compile_library`` hands to ``tvm.compile``.
"""
from .pipeline import CpuInfo, KernelReport, relax_pipeline, schedule_module

__all__ = ["CpuInfo", "KernelReport", "relax_pipeline", "schedule_module"]
