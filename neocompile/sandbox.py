"""The load stage's sandbox: the one place where a model from an untrusted archive is opened.

``load_model`` runs ``loader.find_model`` + ``loader.load`` in a fresh child process (a new interpreter started with
exec, never a forked copy of this one, which may hold S3 credentials or open connections) that gets:

- a minimal environment: no ``AWS_*`` or other secrets, ``HOME`` and ``TMPDIR`` in a private scratch folder
  (inside the job's work folder, so a killed job leaves nothing behind);
- its own network namespace (no network at all) where the kernel allows one (``unshare(CLONE_NEWNET)`` as root,
  ``CLONE_NEWUSER|CLONE_NEWNET`` otherwise); where it does not, the load stage's detail says so;
- resource limits: no core files, and bounded address space, file size, open files and CPU time
  (``NEOCOMPILE_LOAD_MEMORY_BYTES``, ``NEOCOMPILE_LOAD_FILE_BYTES``, ``NEOCOMPILE_LOAD_OPEN_FILES``,
  ``NEOCOMPILE_LOAD_CPU_SECONDS`` override the defaults);
- ``PR_SET_NO_NEW_PRIVS``, and when this process is root, the unprivileged uid/gid 65534 (nobody), which can read
  the extracted model and write only its scratch folder.

The child stays in this process's group (a job deadline kills the group) and dies with its parent. It sends back
the Relax module as JSON with its constants as ``.npy`` arrays (rebound here with ``BindParams``), the signature, and
the source framework's outputs on the seeded verification inputs, so that the source framework never runs in this
process either: the parent's ``LoadedModel.reference`` is a recording for exactly those inputs. A ``NeoError`` in
the child is raised here as the same class with the same message; a crash (a signal, running out of memory)
becomes an ``InputConfigurationError`` naming the model file.

The rule for every loader, here and later: never unpickle with code execution (``torch.jit.load`` and
``torch.load(weights_only=True)`` only, ``np.load`` without ``allow_pickle``) and never run code shipped in the archive.
"""
from __future__ import annotations

import ctypes
import dataclasses
import importlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from . import errors
from .errors import InputConfigurationError, JobTimeout, NeoError

SANDBOX_UID = SANDBOX_GID = 65534  # nobody / nogroup
GiB = 1 << 30
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
RESULT = "result.json"
# What the child may inherit from this environment; everything else (AWS_*, tokens, proxies) stays here.
PASSED_ENV = ("LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TVM_NUM_THREADS")
# The child's first words: read the request, then hand over to _child_main (neocompile itself is trusted code).
BOOT = ("import json, sys; request = json.loads(sys.stdin.buffer.read()); sys.path[:0] = request['path']; "
        "from neocompile.sandbox import _child_main; _child_main(request, int(sys.argv[1]))")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of the load child (soft = hard: it cannot raise them)."""

    memory_bytes: int  # RLIMIT_AS
    file_bytes: int  # RLIMIT_FSIZE
    open_files: int  # RLIMIT_NOFILE
    cpu_seconds: int  # RLIMIT_CPU

    @classmethod
    def for_model(cls, model_bytes: int) -> "Limits":
        """Defaults that grow with the model (its weights are held a few times over while importing), or the env's."""
        return cls(
            memory_bytes=_env_int("NEOCOMPILE_LOAD_MEMORY_BYTES", 8 * GiB + 8 * model_bytes),
            file_bytes=_env_int("NEOCOMPILE_LOAD_FILE_BYTES", 1 * GiB + 2 * model_bytes),
            open_files=_env_int("NEOCOMPILE_LOAD_OPEN_FILES", 1024),
            cpu_seconds=_env_int("NEOCOMPILE_LOAD_CPU_SECONDS", 3600),
        )

    def describe(self) -> str:
        return (f"memory {self.memory_bytes / GiB:.1f} GiB (NEOCOMPILE_LOAD_MEMORY_BYTES), "
                f"files up to {self.file_bytes / GiB:.1f} GiB (NEOCOMPILE_LOAD_FILE_BYTES), "
                f"CPU time {self.cpu_seconds} s (NEOCOMPILE_LOAD_CPU_SECONDS)")


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={text!r} is not valid; expected a positive integer")
    return value


# -- the parent side -------------------------------------------------------------------------------------------------
class Sandbox:
    """One confined child run: ``with Sandbox(root, "model.pth") as box: value = box.call("pkg.mod:func", args)``.

    The child starts in ``root`` (readable to it), calls ``func(args, output)`` and returns its JSON-able value;
    ``output.save_array`` / ``output.open`` write files that the parent reads with ``box.load_array`` / ``box.open``.
    ``what`` names the model file in crash messages. ``report`` says how the child was confined.
    """

    def __init__(self, root: Path, what: str, limits: Limits | None = None, scratch_in: Path | None = None,
                 python: str | None = None):
        """``python``: another interpreter to run the child with (a framework that cannot live beside neocompile,
        loaders/mxnet/reference.py); it imports only neocompile itself from here, not this interpreter's packages."""
        self.root, self.what, self.scratch_in = Path(root).resolve(), what, scratch_in
        self.python = python
        self.limits = limits or Limits.for_model(_tree_bytes(self.root))
        self.report: dict[str, Any] = {}
        self.scratch: Path | None = None
        self.out_fd = -1

    def __enter__(self) -> "Sandbox":
        self.scratch = Path(tempfile.mkdtemp(prefix="neocompile-load-", dir=self.scratch_in))
        try:
            for sub in ("home", "tmp", "out", "lib"):
                (self.scratch / sub).mkdir()
            if self.python is not None:  # neocompile alone on the side interpreter's import path
                (self.scratch / "lib" / "neocompile").symlink_to(Path(__file__).resolve().parent)
            self.out_fd = os.open(self.scratch / "out", os.O_RDONLY | os.O_DIRECTORY)
            if os.geteuid() == 0:  # the scratch folder itself stays root's: the child cannot swap what is in it
                for sub in ("home", "tmp", "out"):
                    os.chown(self.scratch / sub, SANDBOX_UID, SANDBOX_GID)
                _grant_read(self.root, SANDBOX_GID)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.out_fd >= 0:
            os.close(self.out_fd)
            self.out_fd = -1
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def call(self, func: str, args: dict[str, Any], deadline: float | None = None) -> Any:
        """Run ``func`` ("module:function") in the confined child; raise what it raised (see the module docstring)."""
        assert self.scratch is not None, "use Sandbox as a context manager"
        request = {
            "func": func, "args": args, "cwd": str(self.root),
            "path": [str(self.scratch / "lib")] if self.python else _import_path(self.root, self.scratch),
            "home": str(self.scratch / "home"), "tmp": str(self.scratch / "tmp"),
            "limits": dataclasses.asdict(self.limits), "parent": os.getpid(),
            "drop_to": [SANDBOX_UID, SANDBOX_GID] if os.geteuid() == 0 else None,
        }
        for name in os.listdir(self.out_fd):  # what an earlier call left
            try:
                os.unlink(name, dir_fd=self.out_fd)
            except IsADirectoryError:
                shutil.rmtree(name, dir_fd=self.out_fd, ignore_errors=True)
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(
                [self.python or sys.executable, "-I", "-c", BOOT, str(self.out_fd)], stdin=subprocess.PIPE, stdout=log, stderr=log,
                env=_child_env(self.scratch), cwd=self.scratch, pass_fds=(self.out_fd,), close_fds=True,
            )
            try:
                try:
                    proc.stdin.write(json.dumps(request).encode())
                    proc.stdin.close()
                except BrokenPipeError:
                    pass  # it died at once: its exit status says how
                try:
                    proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise JobTimeout("The compilation job exceeded StoppingCondition.MaxRuntimeInSeconds during the 'load' "
                                     "stage (the model import was stopped); no output was written") from None
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 4000))
            tail = log.read().decode("utf-8", "replace")
        return self._outcome(proc.returncode, self._result(), tail)

    def open(self, name: str) -> BinaryIO:
        """A file the child wrote: a plain file opened without following links (the child chose what is there)."""
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"not a plain file name: {name!r}")
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=self.out_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RuntimeError(f"the load sandbox left {name} as something other than a plain file")
        return os.fdopen(fd, "rb")

    def load_array(self, name: str) -> Any:
        import numpy as np

        with self.open(name) as f:
            return np.load(f, allow_pickle=False)

    def load_tensor(self, name: str) -> Any:
        """An array the child saved, as a TVM tensor read from the file straight into its memory (np.load and then
        ``tvm.runtime.tensor`` would hold it twice)."""
        import numpy as np
        import tvm

        with self.open(name) as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            shape, fortran, dtype = read_header(f) if read_header else ((), True, np.dtype(object))
            if fortran or dtype.kind not in "biuf" or not dtype.isnative:
                f.seek(0)
                return tvm.runtime.tensor(np.load(f, allow_pickle=False))
            tensor = tvm.runtime.empty(shape, str(dtype))
            view = np.from_dlpack(tensor).reshape(-1).view(np.uint8)
            if f.readinto(view) != view.size:
                raise RuntimeError(f"the load sandbox left {name} shorter than its header says")
        return tensor

    def summary(self) -> str:
        """How the child was confined, for the load stage's detail."""
        r = self.report
        if not r:
            return "sandbox: no report"
        who = f"uid {r['uid']}" + (f" (could not drop root: {r['drop_error']})" if r.get("drop_error") else "")
        net = r.get("network", {})
        where = "no network" if net.get("isolated") else f"NO network namespace ({net.get('reason', 'unknown')})"
        return f"sandbox: {who}, {where}"

    def _result(self) -> dict[str, Any] | None:
        try:
            with self.open(RESULT) as f:
                return json.loads(f.read(64 << 20))
        except (OSError, ValueError, RuntimeError):
            return None

    def _outcome(self, code: int, result: dict[str, Any] | None, tail: str) -> Any:
        what = self.what
        if code == 0 and isinstance(result, dict) and "ok" in result:
            self.report = result.get("sandbox") or {}
            if result["ok"]:
                return result.get("value")
            if "error" in result:
                raise _neo_error(result["error"])
            unexpected = result.get("unexpected") or {}
            kind, message = unexpected.get("type", "?"), str(unexpected.get("message", ""))
            if result.get("stage") == "setup" or kind in ("ImportError", "ModuleNotFoundError"):
                raise RuntimeError(f"The load sandbox could not start ({self.limits.describe()}): {kind}: {message}\n"
                                   f"{unexpected.get('traceback', '')}")
            if kind == "MemoryError":
                raise InputConfigurationError(
                    f"Loading {what} ran out of memory in the load sandbox (limits: {self.limits.describe()})")
            first = message.strip().splitlines()[0] if message.strip() else ""
            raise InputConfigurationError(f"Loading {what} failed: {kind}: {first}") from RuntimeError(
                unexpected.get("traceback", ""))
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            raise InputConfigurationError(
                f"Loading {what} crashed the loader: it was killed by {name} ({_SIGNAL_CAUSES.get(name, 'see the log')}). "
                f"Limits: {self.limits.describe()}")
        last = next((line for line in reversed(tail.strip().splitlines()) if line.strip()), "")
        raise InputConfigurationError(
            f"Loading {what} stopped the loader with exit status {code}" + (f": {last.strip()[:300]}" if last else "")
            + f". Limits: {self.limits.describe()}")


_SIGNAL_CAUSES = {
    "SIGSEGV": "the framework crashed reading this file", "SIGBUS": "the framework crashed reading this file",
    "SIGILL": "the framework crashed reading this file", "SIGFPE": "the framework crashed reading this file",
    "SIGABRT": "the framework aborted, often for want of memory under the limit",
    "SIGKILL": "out of memory, or the CPU-time limit", "SIGXCPU": "the CPU-time limit",
    "SIGXFSZ": "the file-size limit",
}


def _neo_error(data: dict[str, Any]) -> NeoError:
    """The child's NeoError as the same class with the same message (looked up by name, never unpickled)."""
    cls = getattr(errors, str(data.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, NeoError)):
        cls = InputConfigurationError
    return cls(str(data.get("message", "")))


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _grant_read(root: Path, gid: int) -> None:
    """Let group ``gid`` read ``root``'s tree (files g+r, folders g+rx); links are left alone."""
    for dirpath, _, filenames in os.walk(root):
        for path, bits in ((dirpath, 0o050), *((os.path.join(dirpath, n), 0o040) for n in filenames)):
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            os.chown(path, -1, gid, follow_symlinks=False)
            os.chmod(path, stat.S_IMODE(st.st_mode) | bits)


def _import_path(root: Path, scratch: Path) -> list[str]:
    """This interpreter's import folders for the child, made absolute, never one inside the model or scratch."""
    out = []
    for entry in sys.path:
        if not isinstance(entry, str) or not os.path.isdir(entry or "."):
            continue
        real = Path(entry or ".").resolve()
        if any(real == p or p in real.parents for p in (root, scratch.resolve())):
            continue
        if str(real) not in out:
            out.append(str(real))
    return out


def _child_env(scratch: Path) -> dict[str, str]:
    """The child's whole environment (it points HOME and TMPDIR at descriptors of its scratch folders itself)."""
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    env.update(
        PATH="/usr/local/bin:/usr/bin:/bin", HOME=str(scratch / "home"), TMPDIR=str(scratch / "tmp"),
        PYTHONDONTWRITEBYTECODE="1",
        MALLOC_ARENA_MAX="2",  # glibc reserves 64 MiB of address space per arena: keep RLIMIT_AS for real use
        TVM_FFI_DISABLE_TORCH_C_DLPACK="1",  # never build or load an addon library from a cache folder
    )
    return env


# -- the child side --------------------------------------------------------------------------------------------------
class Output:
    """Where the child writes files for the parent: a folder the parent passed as an open descriptor."""

    def __init__(self, fd: int):
        self.fd = fd

    def open(self, name: str) -> BinaryIO:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=self.fd)
        return os.fdopen(fd, "wb")

    def save_array(self, name: str, array: Any) -> None:
        import numpy as np

        with self.open(name) as f:
            np.save(f, np.asarray(array), allow_pickle=False)


def _child_main(request: dict[str, Any], out_fd: int) -> None:
    """Confine this process, run the requested function, write result.json, exit without interpreter teardown."""
    stage, report = "setup", {}
    try:
        report = _confine(request)
        stage = "run"
        module, _, name = request["func"].partition(":")
        value = getattr(importlib.import_module(module), name)(request["args"], Output(out_fd))
        result: dict[str, Any] = {"ok": True, "value": value}
    except NeoError as exc:
        result = {"ok": False, "error": {"class": type(exc).__name__, "message": str(exc)}}
    except BaseException as exc:  # noqa: BLE001  (everything goes back to the parent)
        result = {"ok": False, "stage": stage, "unexpected": {
            "type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()[-6000:]}}
    result["sandbox"] = report
    report["peak_memory_bytes"] = _peak_memory()
    code = 0
    try:
        with Output(out_fd).open(RESULT) as f:
            f.write(json.dumps(result, default=str).encode())
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 70
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _peak_memory() -> int | None:
    """VmPeak: the address space high-water mark that RLIMIT_AS bounds."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmPeak:"))
    except (OSError, StopIteration, ValueError):
        return None


def _confine(request: dict[str, Any]) -> dict[str, Any]:
    """Limits, a network namespace, the model folder as working folder, an unprivileged user, no new privileges."""
    limits = request["limits"]
    for res, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_AS, limits["memory_bytes"]),
                       (resource.RLIMIT_FSIZE, limits["file_bytes"]), (resource.RLIMIT_NOFILE, limits["open_files"]),
                       (resource.RLIMIT_CPU, limits["cpu_seconds"])):
        _, hard = resource.getrlimit(res)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (value, value))
    libc = ctypes.CDLL(None, use_errno=True)
    report: dict[str, Any] = {}
    network = _unshare(libc, CLONE_NEWNET, "CLONE_NEWNET") if os.geteuid() == 0 else None
    os.chdir(request["cwd"])
    # Reached through descriptors opened now, as the parent's user: no folder above them needs opening up.
    for var, path in (("HOME", request["home"]), ("TMPDIR", request["tmp"])):
        os.environ[var] = f"/proc/self/fd/{os.open(path, os.O_RDONLY | os.O_DIRECTORY)}"
    os.environ["XDG_CACHE_HOME"] = os.path.join(os.environ["HOME"], ".cache")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if request.get("drop_to"):
        uid, gid = request["drop_to"]
        _keep_imports_reachable(uid, gid)
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        except OSError as exc:
            report["drop_error"] = f"{type(exc).__name__}: {exc}"
    if network is None or (not network["isolated"] and os.geteuid() != 0):
        fallback = _unshare(libc, CLONE_NEWUSER | CLONE_NEWNET, "CLONE_NEWUSER|CLONE_NEWNET")
        if network is not None and not fallback["isolated"]:
            fallback["reason"] = f"{network['reason']}; {fallback['reason']}"
        network = fallback
    _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    _prctl(libc, PR_SET_DUMPABLE, 0)
    _prctl(libc, PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != request["parent"]:
        os._exit(1)  # the parent is already gone
    os.umask(0o077)
    report.update(uid=os.getuid(), gid=os.getgid(), network=network, limits=limits)
    return report


def _keep_imports_reachable(uid: int, gid: int) -> None:
    """Import folders that ``uid`` cannot reach by path (a Python installed under /root, mode 0700) are opened now,
    as root, and imported from through ``/proc/self/fd/N``: the unprivileged child still reads the interpreter's
    own modules, and nothing else in those folders' parents."""

    def reachable(path: str) -> bool:
        parts = Path(path).parts
        for i in range(1, len(parts) + 1):
            try:
                st = os.stat(os.path.join(*parts[:i]))
            except OSError:
                return True  # a missing folder is the import system's business
            shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
            need = 0o5 if i == len(parts) else 0o1  # search every folder; list the import folder itself
            if (st.st_mode >> shift) & need != need:
                return False
        return True

    opened: dict[str, str] = {}

    def remap(entry: str) -> str:
        if not isinstance(entry, str) or not os.path.isabs(entry) or entry.startswith("/proc/self/fd/"):
            return entry
        if entry not in opened:
            try:
                opened[entry] = entry if reachable(entry) else f"/proc/self/fd/{os.open(entry, os.O_RDONLY | os.O_DIRECTORY)}"
            except OSError:
                opened[entry] = entry
        return opened[entry]

    sys.path[:] = [remap(e) for e in sys.path]
    for module in list(sys.modules.values()):
        path = getattr(module, "__path__", None)
        if isinstance(path, list):
            path[:] = [remap(e) for e in path]
    importlib.invalidate_caches()


def _unshare(libc: Any, flags: int, name: str) -> dict[str, Any]:
    if libc.unshare(ctypes.c_int(flags)) == 0:
        return {"isolated": True, "how": name}
    err = ctypes.get_errno()
    return {"isolated": False, "reason": f"unshare({name}): {os.strerror(err)}"}


def _prctl(libc: Any, option: int, value: int) -> None:
    if libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


# -- the load stage --------------------------------------------------------------------------------------------------
def load_model(loader: Any, root: Path, shapes: dict[str, tuple] | None, options: dict[str, Any],
               deadline: float | None = None) -> tuple[Any, str]:
    """``loader.find_model(root)`` + ``loader.load(...)`` in the sandbox; returns the LoadedModel and a detail line."""
    from .datainput import TensorSpec
    from .loaders import LoadedModel

    what = loader.find_model(root).name  # names only: the same rule the child applies
    args = {"framework": loader.name, "options": options, "reference": bool(options.get("verify", True)),
            "shapes": None if shapes is None else {k: list(v) for k, v in shapes.items()}}
    with Sandbox(root, what, scratch_in=Path(root).parent) as box:  # the job's work folder
        value = box.call("neocompile.sandbox:_load", args, deadline)
        inputs = [TensorSpec(s["name"], s["dtype"], _shape(s["shape"])) for s in value["inputs"]]
        outputs = [TensorSpec(s["name"], s["dtype"], _shape(s["shape"])) for s in value["outputs"]]
        missing = float(value.get("missing_values", 0.0))
        details = value.get("model_details", {})
        if value.get("side_reference") is not None and args["reference"]:
            # before this process reads the weights back: the framework then runs beside the least memory
            reference = _side_reference(loader, root, what, inputs, value["side_reference"], details, deadline)
        else:
            reference = _recorded(box, inputs, value["reference"], missing)
        mod = _restore_module(box, value["params"])
        detail = f"{value['route']}; {box.summary()}"
    loaded = LoadedModel(
        mod=mod, inputs=inputs, outputs=outputs, reference=reference, framework=value["framework"],
        framework_version=value["framework_version"], route=value["route"],
        data_input_config={k: list(v) for k, v in value["data_input_config"].items()},
        precision=value["precision"], routes_failed=value.get("routes_failed", []),
        model_details=details, missing_values=missing,
    )
    return loaded, detail


def _side_reference(loader: Any, root: Path, what: str, inputs: list, side_args: dict[str, Any],
                    details: dict[str, Any], deadline: float | None) -> "RecordedReference | None":
    """The framework reference recorded by ``loader.side_reference`` in the side interpreter the loader names
    (``loader.side_python()``, decided here, never by the load child), in a sandbox of its own; None when there is
    no such interpreter. ``details["Reference"]`` says which it was, or why there was none. This interpreter as the
    side one (ONNX: onnxruntime apart from TVM) keeps its own import path."""
    python, source = loader.side_python()
    if python is None:
        details["Reference"] = f"none: {source}"
        return None
    details["Reference"] = f"{loader.name.lower()} in a sandbox of its own ({source}: {python})"
    other = None if Path(python) == Path(sys.executable) else str(python)
    with Sandbox(root, what, scratch_in=Path(root).parent, python=other) as box:
        specs = [dataclasses.asdict(s) for s in inputs]
        value = box.call("neocompile.sandbox:_record_side", {"call": loader.side_reference, "args": side_args,
                                                              "inputs": specs}, deadline)
        return _recorded(box, inputs, value)


def _record_side(args: dict[str, Any], out: Output) -> dict[str, Any]:
    """In a side interpreter's child: the framework's outputs on the seeded verification inputs."""
    from .datainput import TensorSpec

    module, name = args["call"].split(":")
    run = getattr(importlib.import_module(module), name)
    specs = [TensorSpec(s["name"], s["dtype"], _shape(s["shape"])) for s in args["inputs"]]
    side = types.SimpleNamespace(inputs=specs, missing_values=0.0, reference=lambda arrays: run(args["args"], specs, arrays))
    return _record_reference(side, out)


def _shape(dims: Any) -> tuple | None:
    return None if dims is None else tuple(dims)


def _load(args: dict[str, Any], out: Output) -> dict[str, Any]:
    """In the child: find and load the model, write the module, its constants and the reference outputs."""
    from .loaders import get_loader

    loader = get_loader(args["framework"])
    model_file = loader.find_model(Path("."))
    shapes = None if args["shapes"] is None else {k: tuple(v) for k, v in args["shapes"].items()}
    loaded = loader.load(model_file, shapes, args["options"])
    params = _save_module(loaded.mod, out)
    loaded.mod = None  # its weights are on disk now: the reference run below gets their memory
    # A loader with a side reference has it recorded apart (load_model), never on top of this child's TVM.
    here = args["reference"] and loaded.reference is not None and loaded.side_reference_args is None
    reference = _record_reference(loaded, out) if here else None
    return {
        "model_file": model_file.as_posix(), "params": params, "reference": reference,
        "inputs": [dataclasses.asdict(s) for s in loaded.inputs], "outputs": [dataclasses.asdict(s) for s in loaded.outputs],
        "framework": loaded.framework, "framework_version": loaded.framework_version, "route": loaded.route,
        "data_input_config": loaded.data_input_config, "precision": loaded.precision,
        "routes_failed": loaded.routes_failed,
        "model_details": loaded.model_details,
        "side_reference": loaded.side_reference_args,
        "missing_values": loaded.missing_values,
    }


def _save_module(mod: Any, out: Output) -> list[list[Any]]:
    """Write ``mod`` as JSON with each Relax function's tensor constants lifted into trailing parameters, saved as
    ``p<function>.<i>.npy``: JSON with constants inline is ~10x slower for a ResNet-50. Each constant is written
    as it is met, straight from the tensor's memory (a DLPack view, no copy)."""
    import numpy as np
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Lift(relax.PyExprMutator):
        def __init__(self, module: Any, index: int):
            super().__init__(module)
            self.vars: list[Any] = []
            self.index = index

        def visit_generic_const_(self, op: Any) -> Any:
            if not isinstance(op.value, tvm.runtime.Tensor):
                return op
            var = relax.Var(f"neocompile_const_{len(self.vars)}", op.ty)
            try:
                array = np.from_dlpack(op.value)
            except (TypeError, BufferError, RuntimeError):  # a dtype numpy's DLPack import lacks (bfloat16, ...)
                array = op.value.numpy()
            out.save_array(f"p{self.index}.{len(self.vars)}.npy", array)
            self.vars.append(var)
            return var

    lifted, params = tvm.IRModule(attrs=mod.attrs), []
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            lift = Lift(mod, len(params))
            body = lift.visit_expr(func).body
            if lift.vars:
                func = relax.Function(list(func.params) + lift.vars, body, func.ret_ty, func.is_pure, func.attrs, func.span)
                params.append([gv.name_hint, len(lift.vars)])
        lifted[gv] = func
    with out.open("module.json") as f:
        f.write(tvm.ir.save_json(lifted).encode())
    return params


def _restore_module(box: Sandbox, params: Sequence[Sequence[Any]]) -> Any:
    import tvm
    from tvm import relax

    with box.open("module.json") as f:
        mod = tvm.ir.load_json(f.read().decode())
    if not isinstance(mod, tvm.IRModule):
        raise RuntimeError(f"the load sandbox returned a {type(mod).__name__}, not an IRModule")
    for index, (name, count) in enumerate(params):
        lifted = list(mod[name].params)[-int(count):]
        binding = {var: box.load_tensor(f"p{index}.{i}.npy") for i, var in enumerate(lifted)}
        mod = relax.transform.BindParams(name, binding)(mod)
    return mod


def _record_reference(loaded: Any, out: Output) -> dict[str, Any]:
    """In the child: the source framework's outputs on the seeded verification inputs (or why it could not run)."""
    from .verify import random_inputs

    try:
        outputs = loaded.reference(random_inputs(loaded.inputs, missing=loaded.missing_values))
    except MemoryError:
        raise
    except NeoError as exc:
        return {"error": {"class": type(exc).__name__, "message": str(exc)}}
    except Exception as exc:  # noqa: BLE001  (raised where verification would have met it)
        return {"failed": f"{type(exc).__name__}: {exc}"}
    for i, array in enumerate(outputs):
        out.save_array(f"reference{i}.npy", array)
    return {"count": len(outputs)}


def _recorded(box: Sandbox, inputs: list[Any], data: dict[str, Any] | None,
              missing: float = 0.0) -> "RecordedReference | None":
    if data is None:
        return None
    if "error" in data:
        return RecordedReference(inputs, [], _neo_error(data["error"]), missing)
    if "failed" in data:
        return RecordedReference(inputs, [], errors.VerificationError(
            f"Verification failed: the source framework could not run the model on the seeded verification inputs: "
            f"{data['failed']}"), missing)
    return RecordedReference(inputs, [box.load_array(f"reference{i}.npy") for i in range(int(data["count"]))], None,
                             missing)


class RecordedReference:
    """The source framework's outputs, recorded in the load sandbox for the seeded verification inputs
    (``verify.random_inputs(inputs)``); called with those inputs it returns them, as the framework would."""

    def __init__(self, inputs: list[Any], outputs: list[Any], error: NeoError | None = None, missing: float = 0.0):
        self.inputs, self.outputs, self.error, self.missing = inputs, outputs, error, missing

    def __call__(self, arrays: Sequence[Any]) -> list[Any]:
        import numpy as np

        from .verify import random_inputs

        if self.error is not None:
            raise self.error
        seeded = random_inputs(self.inputs, missing=self.missing)
        if len(arrays) != len(seeded) or not all(
            np.asarray(a).dtype == s.dtype and np.array_equal(a, s, equal_nan=s.dtype.kind == "f") for a, s in zip(arrays, seeded)
        ):
            raise ValueError("this reference was recorded in the load sandbox for the seeded verification inputs only")
        return [o.copy() for o in self.outputs]
