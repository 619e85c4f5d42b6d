"""A small runtime for neocompile packages, shaped like DLR's ``DLRModel``.

    >>> from neocompile.runtime import Model
    >>> m = Model("out/model-ml_c5.tar.gz")
    >>> m.input_names, m.input_shapes, m.output_names
    >>> outputs = m.run({"data": x})      # or m.run(x), or m.run([x, y])
"""
from __future__ import annotations

import json
import platform
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import NeoError, PackageError

META = "compiled.meta"
LIBRARY = "compiled.so"



def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / META
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PackageError(f"{folder} is not a neocompile package: {META} is missing") from None
    except json.JSONDecodeError as exc:
        raise PackageError(f"{path} is not valid JSON: {exc}") from exc


class Model:
    """Load a compiled package (folder or ``.tar.gz``) and run it on this machine's CPU."""

    def __init__(self, path: str | Path, dev_type: str = "cpu", dev_id: int = 0, emulate: bool = False):
        """``emulate=True`` runs a package built for another CPU architecture (rasp3b, rk3399, ...) through its own
        ``bin/neo_run`` under qemu-user, as the compile job's verification does; slow, but no device needed."""
        path = Path(path)
        self._tmp = None
        if path.is_file():
            self._tmp = tempfile.TemporaryDirectory(prefix="neocompile-model-")
            from .archive import check_member, extract_members
            from .errors import InputConfigurationError

            dest = Path(self._tmp.name)
            try:
                with tarfile.open(path, "r:*") as tar:
                    members = tar.getmembers()
                    for member in members:
                        check_member(member, dest)
                    extract_members(tar, dest, members)
            except (tarfile.TarError, OSError, InputConfigurationError) as exc:
                raise PackageError(f"{path} is not a readable neocompile package: {exc}") from exc
            path = Path(self._tmp.name)
        self.path = path
        self.meta = read_meta(path)
        want = self.meta.get("Requirements", {}).get("TargetDeviceType", "cpu")
        if want != dev_type:
            raise PackageError(f'Compiled model requires device type "{want}" but user gave "{dev_type}".')
        self._inputs = self.meta["Model"]["Inputs"]
        self._outputs = self.meta["Model"]["Outputs"]
        arch = self.meta.get("Compilation", {}).get("Arch")
        from .runtime_libs import host_arch

        here = host_arch() or platform.machine()
        self.emulated_target = None
        if arch and arch != here:
            if not emulate:
                raise PackageError(
                    f"Compiled model is for {arch} ({self.meta['Compilation'].get('Triple')}) but this machine is {here}; "
                    "run it on the target device (the package's bin/neo_run and lib/ need no Python), "
                    "or here under qemu with Model(..., emulate=True)"
                )
            self.emulated_target = self._registry_target()
            return
        from .targets import cpu_flags

        missing = sorted(set(self.meta.get("Requirements", {}).get("CpuFeatures") or []) - cpu_flags())
        if missing:
            raise PackageError(
                f"Compiled model needs CPU features {', '.join(missing)} (mcpu {self.meta['Compilation'].get('Mcpu')}) "
                "that this CPU lacks; compile it for this machine's TargetDevice (see `neocompile targets --native`)"
            )
        import tvm
        from tvm import relax

        self._lib = tvm.runtime.load_module(str(path / LIBRARY))
        self._dev = tvm.cpu(dev_id)
        self._vm = relax.VirtualMachine(self._lib, self._dev)

    def _registry_target(self):
        from .targets import get_target, resolve_platform

        comp = self.meta["Compilation"]
        try:
            return get_target(comp["TargetDevice"])
        except NeoError:
            return resolve_platform(comp["TargetPlatform"])

    # DLR-style accessors -------------------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [i["name"] for i in self._inputs]

    @property
    def input_shapes(self) -> dict[str, list[int]]:
        return {i["name"]: list(i["shape"]) for i in self._inputs}

    @property
    def input_dtypes(self) -> list[str]:
        return [i["dtype"] for i in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self._outputs]

    @property
    def output_dtypes(self) -> list[str]:
        return [o["dtype"] for o in self._outputs]

    def get_input_names(self) -> list[str]:
        return self.input_names

    def get_output_names(self) -> list[str]:
        return self.output_names

    def run(self, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """Run the model; inputs by name (dict), in order (list) or a single array. Returns a list of arrays."""
        import tvm

        arrays = self._order(inputs)
        if self.emulated_target is not None:
            from .emulate import run_library

            return run_library(self.path / LIBRARY, self.emulated_target, arrays, package_dir=self.path)
        args = [tvm.runtime.tensor(a, self._dev) for a in arrays]
        out = self._vm["main"](*args)
        return _flatten(out)

    def _order(self, inputs: Any) -> list[np.ndarray]:
        names = self.input_names
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if isinstance(inputs, Mapping):
            missing = [n for n in names if n not in inputs]
            extra = [n for n in inputs if n not in names]
            if missing or extra:
                raise PackageError(f"Model inputs are {names}; missing {missing}, unexpected {extra}")
            inputs = [inputs[n] for n in names]
        inputs = list(inputs)
        if len(inputs) != len(names):
            raise PackageError(f"Model takes {len(names)} inputs {names}; got {len(inputs)}")
        out = []
        for spec, arr in zip(self._inputs, inputs):
            arr = np.ascontiguousarray(arr)
            if list(arr.shape) != list(spec["shape"]):
                raise PackageError(f"Input '{spec['name']}' has shape {list(arr.shape)}; the model was compiled for {spec['shape']}")
            if str(arr.dtype) != spec["dtype"]:
                if np.can_cast(arr.dtype, spec["dtype"], casting="same_kind"):
                    arr = arr.astype(spec["dtype"])
                else:
                    raise PackageError(f"Input '{spec['name']}' has dtype {arr.dtype}; the model expects {spec['dtype']}")
            out.append(arr)
        return out


def _flatten(out: Any) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    flat: list[np.ndarray] = []
    for item in out:
        flat.extend(_flatten(item))
    return flat


def run_library(lib_path: Path, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run a bare compiled library in this process (host-native targets only)."""
    import tvm
    from tvm import relax

    lib = tvm.runtime.load_module(str(lib_path))
    vm = relax.VirtualMachine(lib, tvm.cpu())
    return _flatten(vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays]))
