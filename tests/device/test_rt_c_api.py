"""The package runtime's C API (lib/libneocompile_rt.so + include/neocompile_rt.h) on the three CPU architectures:
the C example of examples/c/ built with the device's compiler and run inside its device OS image (qemu-user for
ARM), neo_run's latency mode, and the library's ABI surface."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from neocompile.device import images, toolchain
from neocompile.targets import get_target

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "c" / "classify.c"
ARCH_DEVICES = {"x86_64": "ml_c4", "aarch64": "rk3399", "armv7": "rasp3b"}


def _pattern(shape, dtype=np.float32) -> np.ndarray:
    """The input classify.c makes: element i = (i % 7) * 0.25 - 0.5."""
    n = int(np.prod(shape))
    return ((np.arange(n) % 7) * 0.25 - 0.5).astype(dtype).reshape(shape)


def _in_image(root: Path, target, package: Path, exe: Path, args: list[str]) -> subprocess.CompletedProcess:
    """Run ``exe`` (a program of the package's architecture) with the image's own loader and libraries."""
    cmd = images.run_command(root, target, package, None)
    # run_command runs bin/neo_run --load-only <model>: swap in this program and its arguments.
    at = cmd.index(str((package / "bin" / "neo_run").resolve()))
    cmd = [*cmd[:at], str(exe), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _dynamic_symbols(lib: Path) -> tuple[set[str], set[str]]:
    """(defined, undefined) dynamic symbols of an ELF file of any architecture (readelf reads them all)."""
    out = subprocess.run(["readelf", "--dyn-syms", "-W", str(lib)], capture_output=True, text=True, check=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0].endswith(":") and parts[4] in ("GLOBAL", "WEAK"):
            name = parts[7].split("@")[0]
            (undefined if parts[6] == "UND" else defined).add(name)
    return defined, undefined


@pytest.mark.parametrize("arch", sorted(ARCH_DEVICES))
def test_the_library_exports_the_c_api_only_and_needs_only_tvm_ffis_c_abi(arch, packages):
    folder, meta = packages(ARCH_DEVICES[arch])
    lib = folder / "lib" / "libneocompile_rt.so"
    assert "lib/libneocompile_rt.so" in meta["Runtime"]["Bundled"] and (folder / "include" / "neocompile_rt.h").is_file()
    assert meta["Runtime"]["API"] == {"Library": "lib/libneocompile_rt.so", "Header": "include/neocompile_rt.h",
                                      "Python": "python/neocompile_rt.py", "ABI": 1}
    versions = subprocess.run(["readelf", "--dyn-syms", "-W", str(lib)], capture_output=True, text=True).stdout
    assert "nrt_load@@NEOCOMPILE_RT_1" in versions  # the ABI is also an ELF symbol version
    defined, undefined = _dynamic_symbols(lib)
    header = (folder / "include" / "neocompile_rt.h").read_text()
    declared = set(re.findall(r"NRT_API [^;(]*?\b(nrt_\w+)\(", header))
    assert declared and defined == declared, defined ^ declared
    # No C++ symbol of TVM's libraries: the library also runs where Python's tvm wheel (libstdc++) is loaded.
    assert not [s for s in undefined if s.startswith("_Z")], sorted(s for s in undefined if s.startswith("_Z"))
    assert {s for s in undefined if "TVM" in s} and all(s.startswith("TVMFFI") for s in undefined if "TVM" in s)
    assert meta["Requirements"]["FileFloors"]["lib/libneocompile_rt.so"]  # within the device's floors, as every file


@pytest.mark.parametrize("arch", sorted(ARCH_DEVICES))
def test_the_c_example_builds_with_the_devices_compiler_and_matches_the_framework(arch, packages, image_roots, tmp_path):
    import onnxruntime as ort

    from neocompile import modelzoo

    target = get_target(ARCH_DEVICES[arch])
    folder, meta = packages(target.name)
    exe = folder / "bin" / f"classify-{arch}"
    cmd = [toolchain.zig_executable(), "cc", "-target", target.zig_triple, "-std=c99", "-O2", "-Wall", "-Werror",
           str(EXAMPLE), "-I", str(folder / "include"), "-L", str(folder / "lib"), "-lneocompile_rt",
           "-Wl,-rpath,$ORIGIN/../lib", "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, env=toolchain.environment(), timeout=600)
    assert build.returncode == 0, build.stderr
    root = image_roots(target.os["test_image"])
    proc = _in_image(root, target, folder, exe, [str(folder), "1"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("runtime: neocompile-rt 1 (apache-tvm ")
    assert "input 0: data float32 ndim 4" in lines
    at = lines.index("output 0: prob float32 shape 1 10")
    got = np.array([float(v) for v in lines[at + 1:at + 11]], dtype=np.float32)
    x = _pattern(meta["Model"]["Inputs"][0]["shape"])
    want = ort.InferenceSession(modelzoo.small_cnn(size=32).SerializeToString()).run(None, {"data": x})[0].ravel()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_neo_run_latency_mode_loads_once_and_reports_median_and_p90(arch, packages, image_roots, tmp_path):
    from neocompile.device import runner

    target = get_target(ARCH_DEVICES[arch])
    folder, _ = packages(target.name)
    root = image_roots(target.os["test_image"])
    io = tmp_path / "io"
    io.mkdir()
    runner.write_inputs(io, [_pattern([1, 3, 32, 32])])
    proc = _in_image(root, target, folder, folder / "bin" / "neo_run",
                     ["--threads", "1", "--repeat", "7", "--warmup", "2", str(folder), str(io)])
    assert proc.returncode == 0, proc.stderr
    m = re.fullmatch(r"neo_run: 7 runs after 2 warm-up, 1 thread\(s\): median ([\d.]+) ms, p90 ([\d.]+) ms, min ([\d.]+) ms\n",
                     proc.stdout)
    assert m, proc.stdout
    median, p90, low = map(float, m.groups())
    assert 0 < low <= median <= p90
    timing = dict(line.split() for line in (io / "timing.txt").read_text().splitlines())
    assert timing["runs"] == "7" and timing["warmup"] == "2" and timing["threads"] == "1"
    assert float(timing["median_ms"]) == pytest.approx(median, rel=1e-3)
    assert runner.read_outputs(io)[0].shape == (1, 10)  # the outputs of the last run are written too
    # Without an io-dir: zero inputs at the declared shapes, nothing written.
    proc = _in_image(root, target, folder, folder / "bin" / "neo_run", ["--repeat", "3", str(folder)])
    assert proc.returncode == 0 and proc.stdout.startswith("neo_run: 3 runs after 1 warm-up"), proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--repeat", "0"], "--repeat: '0' is not valid; expected an integer >= 1"),
    (["--warmup", "2"], "--warmup goes with --repeat"),
    (["--repeat", "2", "--load-only"], "--load-only and --repeat exclude each other"),
])
def test_neo_run_refuses_bad_latency_options_with_status_2(args, message, packages):
    folder, _ = packages("ml_c4")
    proc = subprocess.run([str(folder / "bin" / "neo_run"), *args, str(folder)], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_bad_use_of_the_c_api_gets_errors_naming_expected_and_given(packages, tmp_path):
    """The C API's own checks (a C caller has no binding in front of it), through ctypes on the host's package."""
    import ctypes
    import json
    import shutil

    folder, _ = packages("ml_c4")
    lib = ctypes.CDLL(str(folder / "lib" / "libneocompile_rt.so"))
    P, I, I64P = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int64)
    for name, args in {"nrt_load": [ctypes.c_char_p, I, ctypes.POINTER(P)], "nrt_free": [P], "nrt_run": [P],
                       "nrt_input_index": [P, ctypes.c_char_p, ctypes.POINTER(I)], "nrt_num_inputs": [P, ctypes.POINTER(I)],
                       "nrt_set_input": [P, I, P, ctypes.c_char_p, I, I64P], "nrt_get_output": [P, I, P, ctypes.c_size_t],
                       "nrt_output_shape": [P, I, ctypes.POINTER(I), I64P], "nrt_set_num_threads": [P, I]}.items():
        getattr(lib, name).argtypes, getattr(lib, name).restype = args, I
    lib.nrt_last_error.restype = ctypes.c_char_p
    lib.nrt_version.restype = ctypes.c_char_p
    error = lambda: lib.nrt_last_error().decode()  # noqa: E731
    handle = ctypes.c_void_p()
    assert lib.nrt_abi_version() == 1 and lib.nrt_version().decode().startswith("neocompile-rt 1 (apache-tvm ")

    def load(path) -> str:
        assert lib.nrt_load(str(path).encode(), 0, ctypes.byref(handle)) == -1 and not handle.value
        return error()

    assert "does not exist; expected a package folder" in load(tmp_path / "nowhere")
    for change, message in [({"Compilation": {"Arch": "aarch64"}}, "is compiled for aarch64 but this runtime is x86_64"),
                            ({"Requirements": {"TargetDeviceType": "gpu"}}, 'requires device type "gpu"'),
                            ({"Requirements": {"MinGlibc": "GLIBC_9.99"}}, "needs glibc 9.99 (compiled.meta MinGlibc)")]:
        bad = tmp_path / f"bad-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(folder, bad)
        meta = json.loads((bad / "compiled.meta").read_text())
        for key, values in change.items():
            meta[key].update(values)
        (bad / "compiled.meta").write_text(json.dumps(meta))
        assert message in load(bad)

    assert lib.nrt_load(str(folder).encode(), 1, ctypes.byref(handle)) == 0, error()
    m = handle
    index = ctypes.c_int()
    assert lib.nrt_input_index(m, b"image", ctypes.byref(index)) == -1
    assert error() == "the model has no input 'image'; its inputs are 'data'"
    assert lib.nrt_run(m) == -1 and error() == "input 'data' is not set; call nrt_set_input first"
    x = np.zeros((1, 3, 32, 32), np.float32)
    shape = (ctypes.c_int64 * 4)(1, 3, 31, 32)
    assert lib.nrt_set_input(m, 0, x.ctypes.data, b"float32", 4, shape) == -1
    assert error() == "input 'data' has shape [1, 3, 31, 32]; the model was compiled for [1, 3, 32, 32]"
    shape = (ctypes.c_int64 * 4)(1, 3, 32, 32)
    assert lib.nrt_set_input(m, 0, x.ctypes.data, b"float64", 4, shape) == -1
    assert error() == "input 'data' has dtype float64; the model expects float32"
    assert lib.nrt_set_input(m, 0, None, b"float32", 4, shape) == -1 and error() == "input 'data': data is NULL"
    assert lib.nrt_set_input(m, 3, x.ctypes.data, b"float32", 4, shape) == -1
    assert error() == "input index 3 is out of range: the model has 1 input(s)"
    assert lib.nrt_get_output(m, 0, None, 0) == -1 and error() == "no output yet: call nrt_run first"
    assert lib.nrt_set_input(m, 0, x.ctypes.data, b"float32", 4, shape) == 0 and lib.nrt_run(m) == 0, error()
    small = (ctypes.c_char * 4)()
    assert lib.nrt_get_output(m, 0, ctypes.addressof(small), 4) == -1
    assert error() == "output 0 ('prob') needs 40 bytes; the buffer holds 4"
    ndim, dims = ctypes.c_int(1), (ctypes.c_int64 * 1)()
    assert lib.nrt_output_shape(m, 0, ctypes.byref(ndim), dims) == -1
    assert error() == "output 0 has rank 2; shape holds 1 value(s) (*ndim)"
    assert lib.nrt_set_num_threads(m, 0) == -1 and "expected an integer >= 1" in error()
    assert lib.nrt_num_inputs(None, ctypes.byref(index)) == -1 and error() == "the model handle is NULL"
    assert lib.nrt_free(m) == 0 and lib.nrt_free(None) == 0


def test_a_package_from_before_the_c_api_runs_on_this_machines_build_of_it(packages, tmp_path):
    import json
    import shutil

    from neocompile.errors import PackageError
    from neocompile.runtime import Model

    folder, _ = packages("ml_c4")
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    for rel in ("lib/libneocompile_rt.so", "include/neocompile_rt.h", "python/neocompile_rt.py"):
        (old / rel).unlink()
    x = _pattern([1, 3, 32, 32])
    np.testing.assert_array_equal(Model(old, num_threads=1).run(x)[0], Model(folder, num_threads=1).run(x)[0])
    meta = json.loads((old / "compiled.meta").read_text())
    meta["Compilation"]["TVMVersion"] = "0.20.0"
    (old / "compiled.meta").write_text(json.dumps(meta))
    with pytest.raises(PackageError, match=r"carries no lib/libneocompile_rt.so and was compiled with TVM 0.20.0, not "
                                           r"this machine's 0\.27"):
        Model(old)
