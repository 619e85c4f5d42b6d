"""CPU kernels: schedule templates for the heavy operators, the fallback for the rest, and the Relax pipeline
that attaches them.

TVM 0.27's default CPU pipeline schedules nothing (conv and matmul come out as serial scalar loops). This
package gives every fused PrimFunc a schedule chosen by target data (``targets/*.json`` ``cpu.vector_bits``
and ``cpu.vector_registers``), in this order:

- ``layout`` first runs the graph's convs channels-last (NHWC), so kernels read and write consecutive channels,
  and ``rewrites`` reshapes operators the templates handle badly (a strided 1x1 conv left in NCHW);

- ``templates``: register-tiled, vectorized, parallel kernels for multiply-accumulate anchors (conv2d of any
  kernel size, stride and group count, depthwise conv, dense / matmul / batch matmul) with the elementwise
  epilogue fused into the tile and constant weights packed at compile time into the layout the kernel reads;
- ``s_tir.dlight`` CPU rules for row reductions (softmax, layer norm, GEMV);
- ``fallback``: parallel outer loops and vectorized inner loops for everything else (pooling, elementwise,
  layout ops), never the naive serial nest;
- ``inplace``: after scheduling, a kernel whose input dies with it and feeds its output element by element (a
  residual add's shortcut) writes its output over that input.

``compiler.compile_library`` runs ``pipeline.weight_steps`` itself (each step's input let go after it, so weights
are not held once per step) and hands ``pipeline.lower_passes`` to ``tvm.compile``; ``pipeline.relax_pipeline``
is the same as one pass.
"""
from .pipeline import CpuInfo, KernelReport, lower_passes, relax_pipeline, schedule_module, weight_steps

__all__ = ["CpuInfo", "KernelReport", "lower_passes", "relax_pipeline", "schedule_module", "weight_steps"]
