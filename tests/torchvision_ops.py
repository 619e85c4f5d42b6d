"""torchvision beside the CPU build of torch (see declare_torchvision_ops)."""
from __future__ import annotations


def declare_torchvision_ops() -> object:
    """Let torchvision 0.28 import beside the CPU build of torch 2.13 (pyproject's `test` extra; tests and `make bench`).

    PyPI's torchvision is built against torch's CUDA build: its C++ ops (`_C.so`) do not load beside the CPU build,
    and torchvision then fails at import in `_meta_registrations` ("operator torchvision::nms does not exist"), which
    also breaks `import transformers`' models (transformers imports torchvision when it is installed). Declaring the
    two operators it registers unconditionally lets it import; the models the tests build (classification backbones)
    use none of torchvision's C++ ops. Returns the library object, which must stay alive."""
    import importlib.util

    from pathlib import Path

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    import torch

    try:
        torch.ops.load_library(str(Path(spec.submodule_search_locations[0]) / "_C.so"))
        return None  # a torchvision built for this torch: its own ops are there
    except (OSError, RuntimeError):
        pass
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return library
