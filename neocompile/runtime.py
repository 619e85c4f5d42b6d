"""A small runtime for neocompile packages, shaped like DLR's ``DLRModel``.

    >>> from neocompile.runtime import Model
    >>> m = Model("out/model-ml_c5.tar.gz")   # or s3://bucket/key, file:///path, or the extracted folder
    >>> m.input_names, m.input_shapes, m.output_names
    >>> outputs = m.run({"data": x})      # or m.run(x), or m.run([x, y])
    >>> Model("out/model-ml_c5.tar.gz", num_threads=2)  # default: $NEOCOMPILE_NUM_THREADS, else every usable core
"""
from __future__ import annotations

import itertools
import json
import numbers
import os
import platform
import re
import tarfile
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import InputConfigurationError, NeoError, PackageError, ValidationError

META = "compiled.meta"
LIBRARY = "compiled.so"
FIELD = "Model package"  # how storage errors name the location given to Model(...)
EXPECTED = "expected a package .tar.gz as compile-model writes it, or its extracted folder"
THREADS_ENV = "NEOCOMPILE_NUM_THREADS"


def read_meta(folder: Path, source: str | None = None) -> dict[str, Any]:
    """The package's compiled.meta; ``source`` is how the user named the package (else the folder)."""
    path = Path(folder) / META
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        names = [p.relative_to(folder).as_posix() for p in itertools.islice(Path(folder).rglob("*"), 10_000)]
        raise PackageError(_not_a_package(source or str(folder), names, archive=False)) from None
    except json.JSONDecodeError as exc:
        raise PackageError(f"{source or folder}: {META} is not valid JSON: {exc}") from exc


def _not_a_package(source: str, names: list[str], archive: bool = True) -> str:
    """Why ``source``, holding ``names`` but no compiled.meta, is no package, and what to do with a model archive."""
    from .loaders import LOADERS

    suffixes = {suffix: name for name, cls in LOADERS.items() for suffix in cls.suffixes}
    models = [n for n in names if not any(part.startswith(".") for part in n.split("/"))
              and Path(n).suffix.lower() in suffixes]
    if models:
        framework = suffixes[Path(models[0]).suffix.lower()]
        what, uri = ("archive", source) if archive else ("folder", "<it packed as model.tar.gz>")
        return (f"'{source}' is not a neocompile package (it has no {META}) but looks like a model source {what} "
                f"({', '.join(models[:3])}); compile it first: compile-model --framework {framework} "
                f"--model-uri {uri} --target-device <device> --output-location <folder>, then run the package it writes")
    return f"'{source}' is not a neocompile package: {META} is missing; {EXPECTED}"


def usable_cores() -> list[int]:
    """The CPUs the calling thread may run on: its affinity mask, so taskset and cgroup cpusets count."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity outside Linux
        return list(range(os.cpu_count() or 1))


def thread_count(num_threads: int | None = None) -> tuple[int, str]:
    """The number of threads a model runs with, and where it came from: ``num_threads``, else
    ``$NEOCOMPILE_NUM_THREADS``, else ``$TVM_NUM_THREADS`` (TVM's own variable), else every usable core (``"cores"``)."""
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral) or num_threads < 1:
            raise ValidationError(f"num_threads: {num_threads!r} is not valid; expected an integer >= 1 "
                                  "(or None: every core this process may use)")
        return int(num_threads), "num_threads"
    for name in (THREADS_ENV, "TVM_NUM_THREADS"):
        text = os.environ.get(name)
        if text:
            if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
                raise ValidationError(f"{name}: {text!r} is not valid; expected an integer >= 1")
            return int(text), name
    return len(usable_cores()), "cores"


# TVM's thread pool belongs to the thread that calls into it and is sized when that thread first uses it (by default
# to half of the machine's CPUs on x86), and TVM pins that thread and the pool's workers to CPUs of its choosing,
# whatever the affinity mask. So models run in a thread of ours per thread count, whose pool is built for that count
# and left free to run on every usable core; the caller's own threads are never resized or pinned.
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(num_threads: int) -> ThreadPoolExecutor:
    """The thread that runs models with ``num_threads`` threads (made on first use)."""
    with _pools_lock:
        pool = _pools.get(num_threads)
        if pool is None:
            pool = ThreadPoolExecutor(1, thread_name_prefix=f"neocompile-{num_threads}-threads")
            try:
                pool.submit(_configure_pool, num_threads, usable_cores()).result()
            except BaseException:
                pool.shutdown(wait=False)
                raise
            _pools[num_threads] = pool
    return pool


def _configure_pool(num_threads: int, cpus: list[int]) -> None:
    """Size this thread's TVM pool to ``num_threads`` threads that may run on any of ``cpus``."""
    import tvm

    def tasks() -> set[str]:
        try:
            return set(os.listdir("/proc/self/task"))
        except OSError:
            return set()

    before = tasks()
    # Mode -3 (kSpecifyThreadShareAllCore) takes one CPU per thread and pins the threads to those CPUs: the first
    # num_threads usable ones. Unpin them (and this thread) afterwards, unless the user set TVM_BIND_THREADS.
    listed = [str(cpus[i % len(cpus)]) for i in range(num_threads)]
    tvm.get_global_func("runtime.config_threadpool")(-3, num_threads, listed)
    if "TVM_BIND_THREADS" not in os.environ:
        # The new tasks are the pool's workers (pools are made one at a time, under _pools_lock); "0": this thread.
        for tid in (tasks() - before) | {"0"}:
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:  # gone already
                pass


def _forget_pools() -> None:
    """In a forked child: the parent's threads do not exist here."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


class Model:
    """Load a compiled package (folder or ``.tar.gz``) and run it on this machine's CPU."""

    def __init__(self, path: str | Path, dev_type: str = "cpu", dev_id: int = 0, emulate: bool = False,
                 num_threads: int | None = None):
        """``emulate=True`` runs a package built for another CPU architecture (rasp3b, rk3399, ...) through its own
        ``bin/neo_run`` under qemu-user, as the compile job's verification does; slow, but no device needed.

        ``num_threads``: how many threads a run uses; by default ``$NEOCOMPILE_NUM_THREADS``, else
        ``$TVM_NUM_THREADS``, else every core this process may use (its affinity mask). ``self.num_threads`` says
        which count applies. Runs of models with the same count take turns; a package's ``compiled.meta`` gives the
        count its kernels were scheduled for under ``Compilation.NumThreads`` (null: any).
        """
        self.num_threads, self._threads_from = thread_count(num_threads)
        self.source = str(path)
        self._tmp = None
        path = self._local(path)
        if not path.exists():
            raise PackageError(f"'{self.source}' does not exist; {EXPECTED}")
        if path.is_file():
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="neocompile-model-")
            from .archive import check_member, extract_members

            dest = Path(self._tmp.name) / "package"
            try:
                with tarfile.open(path, "r:*") as tar:
                    members = tar.getmembers()
                    if META not in {PurePosixPath(m.name).as_posix() for m in members}:
                        raise PackageError(_not_a_package(self.source, [m.name for m in members if m.isfile()]))
                    dest.mkdir()
                    for member in members:
                        check_member(member, dest)
                    extract_members(tar, dest, members)
            except (tarfile.TarError, OSError, InputConfigurationError) as exc:
                raise PackageError(f"'{self.source}' is not a readable neocompile package: {exc}") from exc
            path = dest
        self.path = path
        self.meta = read_meta(path, self.source)
        want = self.meta.get("Requirements", {}).get("TargetDeviceType", "cpu")
        if want != dev_type:
            raise PackageError(f'Compiled model requires device type "{want}" but user gave "{dev_type}".')
        self._inputs = self.meta["Model"]["Inputs"]
        self._outputs = self.meta["Model"]["Outputs"]
        arch = self.meta.get("Compilation", {}).get("Arch")
        from .device.tvm_runtime import host_arch

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
        from .device.floors import glibc_too_old, system_glibc
        from .targets import cpu_flags

        need, have = self.meta.get("Requirements", {}).get("MinGlibc"), system_glibc()
        if glibc_too_old(need, have):
            raise PackageError(
                f"Compiled model needs glibc {need.removeprefix('GLIBC_')} ({need}, compiled.meta MinGlibc) but this "
                f"system has glibc {have}; compile it for a TargetDevice whose reference OS matches this system"
            )
        missing = sorted(set(self.meta.get("Requirements", {}).get("CpuFeatures") or []) - cpu_flags())
        if missing:
            raise PackageError(
                f"Compiled model needs CPU features {', '.join(missing)} (mcpu {self.meta['Compilation'].get('Mcpu')}) "
                "that this CPU lacks; compile it for this machine's TargetDevice (see `neocompile targets --native`)"
            )
        # One runtime path: the package's own C API (lib/libneocompile_rt.so) through the Python binding shipped in
        # the package, as on a device. Python's tvm is imported first, so the C API binds to the wheel's TVM
        # runtime of the same pinned version (same sonames) instead of loading a second copy beside it (two TVM
        # runtimes in one process register every function twice).
        import tvm  # noqa: F401

        from .device.python import neocompile_rt

        library = None
        if not (path / "lib" / "libneocompile_rt.so").is_file():
            library = self._host_c_api()  # a package from before the C API
        try:
            self._rt = neocompile_rt.Model(path, dev_type=dev_type, num_threads=self.num_threads, library=library)
        except neocompile_rt.Error as exc:
            raise PackageError(f"'{self.source}': {exc}") from None

    def _host_c_api(self) -> str:
        """This machine's build of the C API, for a package compiled before packages carried it (its TVM version
        must be the installed one: the model library is run by this TVM runtime)."""
        from .device.runner import RT_LIBRARY, EmulationUnavailable, build_driver
        from .device.tvm_runtime import runtime_versions

        built_with = self.meta.get("Compilation", {}).get("TVMVersion")
        installed = runtime_versions()["tvm"]
        if built_with != installed:
            raise PackageError(f"'{self.source}' carries no lib/libneocompile_rt.so and was compiled with TVM "
                               f"{built_with}, not this machine's {installed}; compile the model again")
        try:
            return str(build_driver(self._registry_target()).parent / RT_LIBRARY)
        except EmulationUnavailable as exc:
            raise PackageError(f"'{self.source}' carries no lib/libneocompile_rt.so and this machine cannot build "
                               f"one: {exc}") from None

    def _local(self, path: str | Path) -> Path:
        """A local path for ``path``: s3:// objects are downloaded (into this model's temporary folder)."""
        if isinstance(path, Path):
            return path
        from . import storage

        try:
            scheme, *location = storage.parse_uri(path, FIELD)
            if scheme != "s3":
                return Path(location[0])
            self._tmp = tempfile.TemporaryDirectory(prefix="neocompile-model-")
            return storage.fetch(path, Path(self._tmp.name) / "download", FIELD)
        except (ValidationError, InputConfigurationError) as exc:  # a malformed URI, a missing bucket or object
            raise PackageError(str(exc).removeprefix("InputConfiguration: ")) from None

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
        arrays = self._order(inputs)
        if self.emulated_target is not None:
            from .device.runner import run_library

            threads = None if self._threads_from == "cores" else self.num_threads  # neo_run's default is the same
            return run_library(self.path / LIBRARY, self.emulated_target, arrays, package_dir=self.path,
                               num_threads=threads)
        from .device.python import neocompile_rt

        try:
            return self._rt.run(arrays)
        except neocompile_rt.Error as exc:
            raise PackageError(str(exc)) from None

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
            # A named dimension (a string such as "N": an XGBoost model's rows) takes any size.
            if arr.ndim != len(spec["shape"]) or any(a != d for a, d in zip(arr.shape, spec["shape"]) if not isinstance(d, str)):
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


def run_library(lib_path: Path, arrays: Sequence[np.ndarray], num_threads: int | None = None) -> list[np.ndarray]:
    """Run a bare compiled library in this process (host-native targets only), with ``num_threads`` threads (by
    default as :class:`Model` picks them); its weights file beside it (``params.params_path``), if any, is passed
    after the inputs."""
    import tvm
    from tvm import relax

    from . import params

    lib = tvm.runtime.load_module(str(lib_path))
    vm = relax.VirtualMachine(lib, tvm.cpu())
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays] + params.load(lib_path)
    return _flatten(_pool(thread_count(num_threads)[0]).submit(vm["main"], *args).result())
