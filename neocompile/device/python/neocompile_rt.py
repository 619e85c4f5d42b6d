"""Run a neocompile package on a device: a Python binding of the package's C runtime (lib/libneocompile_rt.so).

    >>> from neocompile_rt import Model
    >>> m = Model("/opt/models/resnet")      # the package folder; without a path: the package this file sits in
    >>> m.input_names, m.input_shapes, m.input_dtypes, m.output_names
    >>> outputs = m.run({"data": x})         # or m.run(x), or m.run([x, y]); a list of numpy arrays

The same surface as the build machine's ``neocompile.runtime.Model`` and DLR's ``DLRModel`` (``get_input_names``,
``get_output_dtype(i)``, ``get_input(name)``, ...), with nothing but the standard library and numpy: no TVM, no
compiler. Every error is a :class:`Error` (a ``RuntimeError``): :class:`PackageError` when the package cannot run on
this system, :class:`InputError` (also a ``ValueError``) for inputs the model does not take, plain :class:`Error`
for a failure reported by the C runtime.

One ``Model`` may be shared between threads (its runs take turns); two ``Model`` objects run at the same time.
Works on Python 3.7 and later.
"""
import ctypes
import json
import os
import platform
import re
import struct
import sys
import threading
from collections.abc import Mapping

import numpy as np

__all__ = ["Error", "InputError", "Model", "PackageError"]
__version__ = "0.1.0"

ABI_VERSION = 1  # NRT_ABI_VERSION of include/neocompile_rt.h that this module speaks
META = "compiled.meta"
LIBRARY = os.path.join("lib", "libneocompile_rt.so")
LIBRARY_ENV = "NEOCOMPILE_RT_LIBRARY"  # another libneocompile_rt.so to use instead of the package's
_MAX_DIMS = 64  # room for an output's shape (numpy's own limit), so nrt_output_shape is called once per output


class Error(RuntimeError):
    """Any neocompile_rt failure; the text says what and why."""


class PackageError(Error):
    """The package cannot run here: missing or incomplete, or built for another device, CPU or C library."""


class InputError(Error, ValueError):
    """Inputs the model does not take: unknown or missing names, wrong count, shape or dtype."""


# ctypes prototypes of include/neocompile_rt.h, declared once per library.
_c_int_p = ctypes.POINTER(ctypes.c_int)
_c_int64_p = ctypes.POINTER(ctypes.c_int64)
_PROTOTYPES = {
    "nrt_abi_version": (ctypes.c_int, []),
    "nrt_version": (ctypes.c_char_p, []),
    "nrt_last_error": (ctypes.c_char_p, []),
    "nrt_load": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]),
    "nrt_free": (ctypes.c_int, [ctypes.c_void_p]),
    "nrt_num_inputs": (ctypes.c_int, [ctypes.c_void_p, _c_int_p]),
    "nrt_num_outputs": (ctypes.c_int, [ctypes.c_void_p, _c_int_p]),
    "nrt_input_name": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]),
    "nrt_input_dtype": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]),
    "nrt_input_shape": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, _c_int_p, ctypes.POINTER(_c_int64_p)]),
    "nrt_input_index": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, _c_int_p]),
    "nrt_output_name": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]),
    "nrt_output_dtype": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]),
    "nrt_set_input": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                     _c_int64_p]),
    "nrt_input_borrowed": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, _c_int_p]),
    "nrt_run": (ctypes.c_int, [ctypes.c_void_p]),
    "nrt_output_shape": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, _c_int_p, _c_int64_p]),
    "nrt_output_bytes": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)]),
    "nrt_output_data": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]),
    "nrt_get_output": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]),
    "nrt_set_num_threads": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "nrt_get_num_threads": (ctypes.c_int, [ctypes.c_void_p, _c_int_p]),
    "nrt_lock": (ctypes.c_int, [ctypes.c_void_p]),
    "nrt_unlock": (ctypes.c_int, [ctypes.c_void_p]),
}
_libraries = {}  # real path -> ctypes.CDLL with the prototypes declared
_libraries_lock = threading.Lock()

_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
             "armv7l": "armv7", "armv8l": "armv7"}


def process_arch():
    """The CPU architecture this Python process runs as, spelled as compiled.meta's Compilation.Arch spells it.

    The process, not the kernel: a 32-bit ARM userland on a 64-bit kernel (Raspberry Pi OS's armhf images on a
    Pi 3/4/5) reports machine "aarch64" but loads armv7 libraries only."""
    machine = platform.machine().lower()
    arch = _MACHINES.get(machine, machine)
    if struct.calcsize("P") == 4:
        if arch in ("aarch64", "armv7"):
            return "armv7"
        if arch == "x86_64":
            return "i686"
    return arch


def system_glibc():
    """This system's glibc version ("2.36"), or None where the C library is not glibc (or unknown)."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        return None
    name, _, version = text.partition(" ")
    return version if name == "glibc" and version else None


def _version_key(text):
    return tuple(int(m.group(0)) if m else 0 for m in (re.match(r"[0-9]+", part) for part in text.split(".")))


def _cpu_flags():
    """This CPU's flags as x86 Linux's /proc/cpuinfo names them; None where they are unknown (other CPUs, no /proc)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _package_folder(path):
    """(package folder, the path to give nrt_load) for Model(path)."""
    if path is None:
        here = os.path.dirname(os.path.abspath(__file__))
        for folder in (os.path.dirname(here), here):  # <package>/python/neocompile_rt.py, or <package>/neocompile_rt.py
            if os.path.isfile(os.path.join(folder, META)):
                return folder, folder
        raise PackageError(
            "Model() without a path runs the package this module sits in (<package>/python/neocompile_rt.py), but "
            f"{os.path.abspath(__file__)} is not inside a package (no {META} in {os.path.dirname(here)} or {here}); "
            "give the package folder: Model('/path/to/package')")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.isdir(path):
        return path, path
    if os.path.isfile(path):
        if re.search(r"\.(tar|tar\.gz|tgz)$", path):
            raise PackageError(
                f"'{path}' is a package archive; extract it first (mkdir pkg && tar -xzf {path} -C pkg) and give "
                "the folder: Model('pkg')")
        return os.path.dirname(os.path.abspath(path)), path
    raise PackageError(f"'{path}' does not exist; expected a package folder (holding compiled.meta, compiled.so, "
                       "compiled.params and lib/) or its compiled.so")


def _read_meta(folder):
    path = os.path.join(folder, META)
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise PackageError(f"'{folder}' is not a neocompile package: {META} is missing; expected the folder that holds "
                           "compiled.meta, compiled.so, compiled.params and lib/") from None
    except OSError as exc:
        raise PackageError(f"{path}: cannot read it: {exc}") from None
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        raise PackageError(f"{path} is not valid JSON: {exc}") from None
    model = meta.get("Model") if isinstance(meta, dict) else None
    if not (isinstance(model, dict) and isinstance(model.get("Inputs"), list)
            and isinstance(model.get("Outputs"), list)):
        raise PackageError(f"{path} lacks Model.Inputs / Model.Outputs; the package is damaged or not a neocompile "
                           "package")
    return meta


def _check_runs_here(meta, dev_type):
    """The checks made before the library loads: device type, CPU architecture and features, glibc."""
    req = meta.get("Requirements") or {}
    comp = meta.get("Compilation") or {}
    want = req.get("TargetDeviceType") or "cpu"
    if want != dev_type:
        raise PackageError(f'Compiled model requires device type "{want}" but user gave "{dev_type}".')
    if want != "cpu":
        raise PackageError(f'Compiled model requires device type "{want}"; neocompile_rt runs models on the CPU only '
                           '(device type "cpu")')
    arch, here = comp.get("Arch"), process_arch()
    if arch and arch != here:
        raise PackageError(
            "Compiled model is for {} ({}) but this Python runs on {} (machine {}, {}-bit); run it on a {} device, or "
            "compile the model for this one".format(arch, comp.get("Triple") or "triple unknown", here,
                                                     platform.machine(), struct.calcsize("P") * 8, arch))
    need, have = req.get("MinGlibc"), system_glibc()
    if need and have:
        need_version = need[len("GLIBC_"):] if need.startswith("GLIBC_") else need  # noqa: FURB188 (3.9+)
        if _version_key(need_version) > _version_key(have):
            raise PackageError(
                f"Compiled model needs glibc {need_version} ({need}, compiled.meta Requirements.MinGlibc) but this "
                f"system has glibc {have}; compile it for a TargetDevice whose reference OS matches this system")
    wanted = req.get("CpuFeatures") or []
    flags = _cpu_flags() if wanted and here in ("x86_64", "i686") else None
    if flags is not None:
        missing = sorted(set(wanted) - flags)
        if missing:
            raise PackageError(
                "Compiled model needs CPU features {} (mcpu {}) that this CPU lacks; compile it for this machine's "
                "TargetDevice".format(", ".join(missing), comp.get("Mcpu")))


def _library_path(folder):
    override = os.environ.get(LIBRARY_ENV)
    if override:
        if not os.path.isfile(override):
            raise PackageError(f"{LIBRARY_ENV}={override}: no such file; expected the path of a libneocompile_rt.so")
        return override
    path = os.path.join(folder, LIBRARY)
    if not os.path.isfile(path):
        raise PackageError(
            f"{path} is missing: the package at {folder} is incomplete (a package carries its runtime in lib/: "
            "libneocompile_rt.so and the libtvm_*.so it needs); copy the whole package, or compile the model again "
            "with a neocompile that bundles the runtime")
    return path


def _load_library(path):
    """The library at ``path``, loaded once per process, with its prototypes declared and its ABI checked."""
    key = os.path.realpath(path)
    with _libraries_lock:
        lib = _libraries.get(key)
        if lib is not None:
            return lib
        try:
            lib = ctypes.CDLL(path)  # its RUNPATH ($ORIGIN) finds the libtvm_*.so beside it
        except OSError as exc:
            hint = ""
            if system_glibc() is None:
                hint = " (this system's C library is not glibc; the package's libraries need glibc)"
            raise PackageError(f"Cannot load {path}: {exc}{hint}") from None
        try:
            abi_version = lib.nrt_abi_version
            abi_version.restype, abi_version.argtypes = ctypes.c_int, []
            abi = abi_version()
            if abi != ABI_VERSION:
                raise PackageError(
                    f"{path} has runtime ABI {abi} but this neocompile_rt.py speaks ABI {ABI_VERSION}; use the "
                    "neocompile_rt.py that came with the package (its python/ folder)")
            for name, (restype, argtypes) in _PROTOTYPES.items():
                func = getattr(lib, name)
                func.restype, func.argtypes = restype, argtypes
        except AttributeError as exc:
            raise PackageError(f"{path} is not a neocompile runtime library ({exc})") from None
        _libraries[key] = lib
        if "tvm" not in sys.modules:
            _refuse_tvm_imports(path)
        return lib


class _TvmAfterRuntime(object):
    """An import hook that refuses ``import tvm`` (and ``tvm_ffi``) once a package's own TVM runtime is loaded into
    this process: Python's tvm wheel would load a second TVM runtime beside it, and the two register every function
    twice (the process aborts). Importing tvm *before* the first Model is fine: the package's library then runs on
    the wheel's runtime of the same version (what ``neocompile.runtime.Model`` does)."""

    def __init__(self, library):
        self.library = library

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tvm", "tvm_ffi") and name not in sys.modules:
            raise ImportError(
                "{} cannot be imported after neocompile_rt loaded a package's TVM runtime ({}) into this process: "
                "two TVM runtimes in one process abort it. Import tvm before creating the first neocompile_rt.Model, "
                "or use it in another process".format(name, self.library), name=name)
        return None



def _refuse_tvm_imports(library):
    if not any(isinstance(f, _TvmAfterRuntime) for f in sys.meta_path):
        sys.meta_path.insert(0, _TvmAfterRuntime(library))


def _address(arr, _from_buffer=ctypes.c_char.from_buffer, _addressof=ctypes.addressof):
    """The address of a C-contiguous array's data. Through the buffer protocol, six times faster than
    ``__array_interface__``, for writable arrays of at least one byte; the interface for the others."""
    try:
        return _addressof(_from_buffer(arr))
    except (TypeError, ValueError, BufferError):  # read-only, or empty
        return arr.__array_interface__["data"][0]


def _last_error(lib):
    text = lib.nrt_last_error()
    return text.decode("utf-8", "replace") if text else "unknown error"


def _threads_argument(value, what="num_threads"):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise Error(f"{what}: {value!r} is not valid; expected an integer >= 1 (or None: the default)")
    return int(value)


def _numpy_dtype(kind, spec):
    try:
        return np.dtype(spec["dtype"])
    except TypeError:
        raise PackageError("{} '{}' has dtype {!r}, which numpy does not know; neocompile_rt cannot use it".format(
            kind, spec["name"], spec["dtype"])) from None


class _Input:
    """What run() needs of one input, computed once."""
    __slots__ = ("c_shape", "dtype", "dtype_bytes", "dtype_name", "index", "name", "ndim", "shape", "static")

    def __init__(self, index, spec):
        self.index, self.name, self.dtype, self.dtype_name = index, spec["name"], _numpy_dtype("Input", spec), spec["dtype"]
        self.dtype_bytes = spec["dtype"].encode()
        self.shape = list(spec["shape"])  # a named dimension ("N") stays a string: any size
        self.ndim = len(self.shape)
        self.static = tuple(self.shape) if all(isinstance(d, int) for d in self.shape) else None
        # The shape given to nrt_set_input: fixed for a static input, filled from the array otherwise.
        self.c_shape = (ctypes.c_int64 * self.ndim)(*self.static) if self.static is not None else None


class _Output:
    __slots__ = ("c_ndim", "c_shape", "checked", "dtype", "dtype_name", "index", "name")

    def __init__(self, index, spec):
        self.index, self.name, self.dtype, self.dtype_name = index, spec["name"], _numpy_dtype("Output", spec), spec["dtype"]
        self.c_ndim = ctypes.c_int()
        self.c_shape = (ctypes.c_int64 * _MAX_DIMS)()
        self.checked = False  # its size in bytes compared with nrt_output_bytes (on the first run)


class Model:
    """A neocompile package loaded for running on this machine's CPU.

    ``path``: the package folder (compiled.meta, compiled.so, compiled.params, lib/) or its compiled.so; by default
    the package this module sits in. ``dev_type``/``dev_id``: as DLR takes them ("cpu" only; dev_id is ignored).
    ``num_threads``: threads per run; by default $NEOCOMPILE_NUM_THREADS, else $TVM_NUM_THREADS, else every CPU this
    process may run on. The library is ``library`` if given, else $NEOCOMPILE_RT_LIBRARY, else the package's
    lib/libneocompile_rt.so.
    """

    def __init__(self, path=None, dev_type="cpu", dev_id=0, num_threads=None, library=None):
        self._handle = None  # first, so that __del__ of a half-made Model does nothing
        self._lock = threading.Lock()
        if num_threads is not None:
            num_threads = _threads_argument(num_threads)
        if isinstance(dev_id, bool) or not isinstance(dev_id, (int, np.integer)) or dev_id < 0:
            raise Error(f"dev_id: {dev_id!r} is not valid; expected an integer >= 0")
        dev_type = "cpu" if dev_type is None else dev_type  # DLR's default
        self.path, load_path = _package_folder(path)
        self.meta = _read_meta(self.path)
        _check_runs_here(self.meta, dev_type)
        if library is not None and not os.path.isfile(library):
            raise PackageError(f"library={library!r}: no such file; expected the path of a libneocompile_rt.so")
        self.library = os.fspath(library) if library is not None else _library_path(self.path)
        lib = self._lib = _load_library(self.library)

        self._inputs = [_Input(i, spec) for i, spec in enumerate(self.meta["Model"]["Inputs"])]
        self._outputs = [_Output(i, spec) for i, spec in enumerate(self.meta["Model"]["Outputs"])]
        self._by_name = {i.name: i for i in self._inputs}
        self._names = [i.name for i in self._inputs]
        self._held = [None] * len(self._inputs)  # the arrays the handle may borrow: kept until replaced

        handle = ctypes.c_void_p()
        if lib.nrt_load(os.fsencode(load_path), num_threads or 0, ctypes.byref(handle)) != 0:
            raise PackageError(_last_error(lib))
        self._handle = handle
        counts = ctypes.c_int(), ctypes.c_int()
        self._check(lib.nrt_num_inputs(handle, counts[0]))
        self._check(lib.nrt_num_outputs(handle, counts[1]))
        if (counts[0].value, counts[1].value) != (len(self._inputs), len(self._outputs)):
            self.close()
            raise PackageError(
                f"{self.path}: the runtime reports {counts[0].value} input(s) and {counts[1].value} output(s) but "
                f"compiled.meta declares {len(self._inputs)} and {len(self._outputs)}; the package is damaged")
        # Bound once: run() calls these on every input and output.
        self._set_input = lib.nrt_set_input
        self._run = lib.nrt_run
        self._output_shape = lib.nrt_output_shape
        self._get_output = lib.nrt_get_output

    # Errors --------------------------------------------------------------------------------------------------------
    def _check(self, rc):
        if rc != 0:
            raise Error(_last_error(self._lib))

    def _live(self):
        handle = self._handle
        if handle is None:
            raise Error("this Model is closed")
        return handle

    # Description (as neocompile.runtime.Model) ---------------------------------------------------------------------
    @property
    def input_names(self):
        return list(self._names)

    @property
    def input_shapes(self):
        return {i.name: list(i.shape) for i in self._inputs}

    @property
    def input_dtypes(self):
        return [i.dtype_name for i in self._inputs]

    @property
    def output_names(self):
        return [o.name for o in self._outputs]

    @property
    def output_dtypes(self):
        return [o.dtype_name for o in self._outputs]

    @property
    def num_threads(self):
        """The threads a run uses; settable."""
        with self._lock:
            n = ctypes.c_int()
            self._check(self._lib.nrt_get_num_threads(self._live(), n))
            return n.value

    @num_threads.setter
    def num_threads(self, value):
        value = _threads_argument(value)
        with self._lock:
            self._check(self._lib.nrt_set_num_threads(self._live(), value))

    @property
    def version(self):
        """The loaded runtime: "neocompile-rt <abi> (apache-tvm <version>, apache-tvm-ffi <version>)"."""
        return self._lib.nrt_version().decode("utf-8", "replace")

    # DLR's names ----------------------------------------------------------------------------------------------------
    def get_input_names(self):
        return self.input_names

    def get_output_names(self):
        return self.output_names

    def get_input_dtypes(self):
        return self.input_dtypes

    def get_output_dtypes(self):
        return self.output_dtypes

    def get_input_name(self, index):
        return self._inputs[self._index(index, len(self._inputs), "input")].name

    def get_output_name(self, index):
        return self._outputs[self._index(index, len(self._outputs), "output")].name

    def get_input_dtype(self, index):
        return self._inputs[self._index(index, len(self._inputs), "input")].dtype_name

    def get_output_dtype(self, index):
        return self._outputs[self._index(index, len(self._outputs), "output")].dtype_name

    def get_version(self):
        return self.version

    def has_metadata(self):
        return True  # a package without compiled.meta is refused

    def get_input(self, name, shape=None):
        """A copy of the last value set for input ``name`` (by run()); ``shape``: reshape it so."""
        spec = self._by_name.get(name)
        if spec is None:
            raise InputError(f"'{name}' is not an input of this model; its inputs are {self._names}")
        with self._lock:
            held = self._held[spec.index]
            if held is None:
                raise InputError(f"Input '{name}' has not been set yet; run the model first")
            out = held.copy()
        return out.reshape(shape) if shape is not None else out

    @staticmethod
    def _index(index, count, what):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
            raise InputError(f"{what} index {index!r} is out of range: the model has {count} {what}(s)")
        return int(index)

    # Running -------------------------------------------------------------------------------------------------------
    def run(self, inputs):
        """Run the model; inputs by name (dict), in order (list) or a single array. Returns a list of arrays (copies
        that belong to the caller)."""
        arrays = self._order(inputs)
        with self._lock:
            handle = self._handle
            if handle is None:
                raise Error("this Model is closed")
            set_input, held = self._set_input, self._held
            for spec, arr in zip(self._inputs, arrays):
                c_shape = spec.c_shape if spec.static is not None else (ctypes.c_int64 * spec.ndim)(*arr.shape)
                rc = set_input(handle, spec.index, _address(arr), spec.dtype_bytes, spec.ndim, c_shape)
                held[spec.index] = arr  # the handle may borrow its memory until the input is set again
                if rc != 0:
                    raise Error(_last_error(self._lib))
            if self._run(handle) != 0:
                raise Error(_last_error(self._lib))
            output_shape, get_output = self._output_shape, self._get_output
            outs = []
            for o in self._outputs:
                o.c_ndim.value = _MAX_DIMS  # in: room in c_shape; out: the rank
                if output_shape(handle, o.index, o.c_ndim, o.c_shape) != 0:
                    raise Error(_last_error(self._lib))
                out = np.empty(o.c_shape[:o.c_ndim.value], o.dtype)
                if not o.checked:
                    self._check_output_size(handle, o, out)
                if get_output(handle, o.index, _address(out), out.nbytes) != 0:
                    raise Error(_last_error(self._lib))
                outs.append(out)
        return outs

    def _check_output_size(self, handle, o, out):
        """Once per output: its size is what compiled.meta's dtype gives (else the copy would be read wrongly)."""
        nbytes = ctypes.c_size_t()
        self._check(self._lib.nrt_output_bytes(handle, o.index, ctypes.byref(nbytes)))
        if nbytes.value != out.nbytes:
            raise Error(f"Output '{o.name}' of shape {list(out.shape)} holds {nbytes.value} bytes, not the "
                        f"{out.nbytes} that its dtype {o.dtype_name} (compiled.meta) gives; the package is damaged")
        o.checked = True

    def _order(self, inputs):
        """The inputs as arrays in the model's order, checked and converted as neocompile.runtime does."""
        names = self._names
        if isinstance(inputs, (np.ndarray, np.generic)):
            inputs = [inputs]
        elif isinstance(inputs, Mapping):
            if len(inputs) != len(names) or any(n not in inputs for n in names):
                missing = [n for n in names if n not in inputs]
                extra = [n for n in inputs if n not in self._by_name]
                raise InputError(f"Model inputs are {names}; missing {missing}, unexpected {extra}")
            inputs = [inputs[n] for n in names]
        elif not isinstance(inputs, (list, tuple)):
            try:
                inputs = list(inputs)
            except TypeError:
                raise InputError(f"Model inputs are {names}; expected a dict of arrays by name, a list of arrays in that "
                                 f"order, or one array; got {type(inputs).__name__}") from None
        if len(inputs) != len(names):
            raise InputError(f"Model takes {len(names)} inputs {names}; got {len(inputs)}")
        out = []
        for spec, arr in zip(self._inputs, inputs):
            if type(arr) is not np.ndarray:
                arr = np.asarray(arr)
            if not arr.flags.c_contiguous:
                arr = np.ascontiguousarray(arr)
            if arr.shape != spec.static and not self._shape_fits(spec, arr.shape):
                raise InputError(f"Input '{spec.name}' has shape {list(arr.shape)}; the model was compiled for "
                                 f"{spec.shape}")
            if arr.dtype != spec.dtype:
                if np.can_cast(arr.dtype, spec.dtype, casting="same_kind"):
                    arr = arr.astype(spec.dtype)
                else:
                    raise InputError(f"Input '{spec.name}' has dtype {arr.dtype}; the model expects {spec.dtype_name}")
            out.append(arr)
        return out

    @staticmethod
    def _shape_fits(spec, shape):
        # A named dimension (a string such as "N": an XGBoost model's rows) takes any size.
        return len(shape) == spec.ndim and all(isinstance(d, str) or a == d for a, d in zip(shape, spec.shape))

    def _borrowed(self, name):
        """Whether the handle currently borrows the memory of the array last given for input ``name`` (else it holds
        a copy); the C runtime borrows 64-byte aligned arrays."""
        out = ctypes.c_int()
        with self._lock:
            self._check(self._lib.nrt_input_borrowed(self._live(), self._by_name[name].index, out))
        return bool(out.value)

    # Lifetime ------------------------------------------------------------------------------------------------------
    def close(self):
        """Free the model (nrt_free); later calls raise Error. Called by ``with Model(...) as m:`` and __del__."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            handle, self._handle = getattr(self, "_handle", None), None
            if handle is not None:
                self._lib.nrt_free(handle)
            self._held = [None] * len(getattr(self, "_held", ()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - at interpreter exit ctypes or the library may be gone already
            pass

    def __repr__(self):
        return "<neocompile_rt.Model {} inputs={} outputs={}{}>".format(
            self.path, self.input_names, self.output_names, "" if self._handle is not None else " closed")
