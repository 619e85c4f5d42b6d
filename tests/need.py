"""Test dependencies that must be there: a missing one fails the module with what to do, never a silent skip."""
from __future__ import annotations

import importlib
from types import ModuleType


def need(module: str) -> ModuleType:
    """Import ``module`` or fail collection saying it is a test dependency that `make test` installs."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is a test dependency of neocompile and is not importable here ({exc}); "
                          "`make test` installs it (pyproject extra [test])") from exc
