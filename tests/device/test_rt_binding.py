"""The on-device Python binding of the package runtime (python/neocompile_rt.py over lib/libneocompile_rt.so) and
its distribution, neocompile-runtime (runtime-python/).

Packages are compiled here by the pipeline for ml_c4 (runs natively on any AVX2 x86 CPU); the binding's outputs are
compared with onnxruntime on the source model, with numpy and with xgboost (not with neocompile.runtime.Model, which
runs packages through this binding).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import neocompile
from neocompile import runtime
from neocompile.device.floors import system_glibc
from neocompile.device.tvm_runtime import host_arch
from tests.models import SMALL_CONFIG, SMALL_SHAPE, small_onnx_archive

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "neocompile" / "device" / "python" / "neocompile_rt.py"
HEADER = ROOT / "neocompile" / "device" / "driver" / "include" / "neocompile_rt.h"
DIST = ROOT / "runtime-python"
PYTHON = sys.executable


def _import_binding():
    spec = importlib.util.spec_from_file_location("neocompile_rt", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rt = _import_binding()


def unpack(archive: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="tar")
    return folder


def compile_to_folder(archive: Path, tmp: Path, config, target: str = "ml_c4", framework: str = "ONNX") -> Path:
    result = neocompile.compile_model(str(archive), framework, str(tmp / "out"), config, target_device=target)
    return unpack(Path(result.artifact_uri), tmp / "pkg")


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> Path:
    """The tests' small CNN (data[1,3,32,32] -> prob[1,10]) compiled for ml_c4, extracted."""
    tmp = tmp_path_factory.mktemp("rt-cnn")
    return compile_to_folder(small_onnx_archive(tmp), tmp, SMALL_CONFIG)


def two_io_onnx():
    """Two inputs of two dtypes, two outputs: sum = a + float(b), square = b * b."""
    from onnx import TensorProto, helper

    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["a", "bf"], ["sum"]),
             helper.make_node("Mul", ["b", "b"], ["square"])]
    graph = helper.make_graph(nodes, "two-io", [vi("a", TensorProto.FLOAT, [2, 3]), vi("b", TensorProto.INT32, [2, 3])],
                              [vi("sum", TensorProto.FLOAT, [2, 3]), vi("square", TensorProto.INT32, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def two_io(tmp_path_factory) -> Path:
    from neocompile import modelzoo

    tmp = tmp_path_factory.mktemp("rt-two-io")
    archive = modelzoo.onnx_archive(tmp / "model.tar.gz", two_io_onnx())
    return compile_to_folder(archive, tmp, {"a": [2, 3], "b": [2, 3]})


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SMALL_SHAPE).astype("float32")


@pytest.fixture(scope="module")
def reference():
    """The CNN's outputs for an input, by onnxruntime on the ONNX model that the cnn package was compiled from."""
    import onnxruntime

    from neocompile import modelzoo

    session = onnxruntime.InferenceSession(modelzoo.small_cnn(size=32).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return lambda data: session.run(None, {"data": data})[0]


@pytest.fixture(scope="module")
def ab():
    rng = np.random.default_rng(1)
    return rng.standard_normal((2, 3)).astype("float32"), rng.integers(-100, 100, (2, 3)).astype("int32")


def copy_package(folder: Path, dest: Path, **meta_changes) -> Path:
    """A copy of the package at ``dest`` with compiled.meta's ``Section__Key=value`` changed."""
    shutil.copytree(folder, dest, symlinks=True)
    meta = json.loads((dest / "compiled.meta").read_text())
    for key, value in meta_changes.items():
        section, field = key.split("__")
        meta[section][field] = value
    (dest / "compiled.meta").write_text(json.dumps(meta))
    return dest


# The binding and the header agree ------------------------------------------------------------------------------------

def test_binding_declares_every_function_of_the_header_with_its_arity():
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.DOTALL)
    declared = {name: 0 if args.strip() == "void" else args.count(",") + 1
                for name, args in re.findall(r"NRT_API[^;(]*?\b(nrt_\w+)\s*\(([^)]*)\)\s*;", text)}
    assert len(declared) >= 20
    assert {name: len(argtypes) for name, (_, argtypes) in rt._PROTOTYPES.items()} == declared
    assert int(re.search(r"#define NRT_ABI_VERSION (\d+)", text).group(1)) == rt.ABI_VERSION


def test_binding_is_python_3_7_syntax_and_needs_only_the_standard_library_and_numpy():
    tree = ast.parse(SOURCE.read_text(), feature_version=(3, 7))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported - set(sys.stdlib_module_names) == {"numpy"}


# Running ---------------------------------------------------------------------------------------------------------------

def test_runs_the_model_from_an_array_a_list_and_a_dict(cnn, x, reference):
    want = reference(x)
    with rt.Model(cnn) as m:
        for inputs in (x, [x], (x,), {"data": x}):
            out = m.run(inputs)
            assert isinstance(out, list) and len(out) == 1
            assert out[0].dtype == np.float32 and out[0].shape == (1, 10)
            np.testing.assert_allclose(out[0], want, rtol=1e-5, atol=1e-6)
        first, second = m.run(x)[0], m.run(x)[0]
        assert first is not second and not np.shares_memory(first, second)  # copies that belong to the caller


def test_describes_the_model_as_the_build_machine_runtime_and_dlr_do(cnn):
    ref = runtime.Model(cnn)
    m = rt.Model(cnn)
    assert m.input_names == ref.input_names == ["data"]
    assert m.input_shapes == ref.input_shapes == {"data": SMALL_SHAPE}
    assert m.input_dtypes == ref.input_dtypes == ["float32"]
    assert m.output_names == ref.output_names == ["prob"]
    assert m.output_dtypes == ref.output_dtypes == ["float32"]
    assert (m.get_input_names(), m.get_output_names()) == (["data"], ["prob"])
    assert (m.get_input_dtypes(), m.get_output_dtypes()) == (["float32"], ["float32"])
    assert (m.get_input_name(0), m.get_output_name(0), m.get_input_dtype(0), m.get_output_dtype(0)) == \
           ("data", "prob", "float32", "float32")
    assert m.has_metadata()
    assert re.fullmatch(r"neocompile-rt 1 \(apache-tvm \S+, apache-tvm-ffi \S+\)", m.get_version())
    with pytest.raises(rt.InputError, match=r"output index 1 is out of range: the model has 1 output\(s\)"):
        m.get_output_dtype(1)


def test_two_inputs_by_name_or_in_order_give_each_output_its_dtype(two_io, ab):
    a, b = ab
    m = rt.Model(two_io)
    assert (m.input_names, m.input_dtypes, m.output_names, m.output_dtypes) == \
           (["a", "b"], ["float32", "int32"], ["sum", "square"], ["float32", "int32"])
    for inputs in ({"a": a, "b": b}, {"b": b, "a": a}, [a, b]):
        total, square = m.run(inputs)
        assert (total.dtype, square.dtype) == (np.float32, np.int32)
        np.testing.assert_allclose(total, a + b, rtol=1e-6)
        np.testing.assert_array_equal(square, b * b)
    np.testing.assert_array_equal(m.get_input("b"), b)  # DLR's get_input: the last value set
    assert m.get_input("a", shape=(3, 2)).shape == (3, 2)


def test_same_kind_dtypes_are_cast_and_non_contiguous_arrays_are_copied(two_io, ab):
    a, b = ab
    m = rt.Model(two_io)
    want = m.run([a, b])
    wide = np.asfortranarray(a.astype("float64"))  # float64 -> float32 is a same_kind cast, as neocompile.runtime does
    strided = np.repeat(b, 2, axis=1)[:, ::2]
    assert not wide.flags.c_contiguous and not strided.flags.c_contiguous
    for got, ref in zip(m.run([wide, strided.astype("int16")]), want):
        np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(m.run([a, strided])[1], want[1])
    frozen = a.copy()
    frozen.flags.writeable = False  # read-only memory is fed as well
    np.testing.assert_array_equal(m.run([frozen, b])[0], want[0])


def test_keeps_every_array_it_gave_the_runtime_until_it_is_replaced(cnn, x):
    m = rt.Model(cnn)
    raw = np.empty(x.nbytes + 64, np.uint8)
    offset = -raw.__array_interface__["data"][0] % 64
    aligned = raw[offset:offset + x.nbytes].view(np.float32).reshape(x.shape)
    aligned[...] = x
    want = m.run(x.copy())[0]
    got = m.run(aligned)[0]
    assert m._borrowed("data")  # 64-byte aligned: the runtime reads the caller's memory...
    assert m._held[0] is aligned  # ...which the Model keeps alive
    np.testing.assert_array_equal(got, want)
    unaligned = raw[1:1 + x.nbytes].view(np.float32).reshape(x.shape)
    m.run(unaligned)
    assert not m._borrowed("data") and m._held[0] is unaligned


def test_a_named_dimension_takes_any_size(tmp_path_factory):
    from neocompile import modelzoo
    from tests import xgboost_models as xm

    tmp = tmp_path_factory.mktemp("rt-xgboost")
    booster = xm.train("binary:logistic", rounds=4)
    archive = modelzoo.write_archive(tmp / "model.tar.gz", {"xgboost-model": bytes(booster.save_raw("json"))})
    m = rt.Model(compile_to_folder(archive, tmp, None, framework="XGBOOST"), num_threads=1)
    assert m.input_shapes == {"data": ["N", xm.NUM_FEATURE]}
    for rows in (1, 7, 500):
        features = xm.data(rows, seed=rows)
        got = m.run(features)[0]
        assert got.shape[0] == rows
        np.testing.assert_allclose(got.reshape(rows), booster.inplace_predict(features), rtol=1e-5, atol=1e-6)
    with pytest.raises(rt.InputError, match=re.escape("Input 'data' has shape [4, 5]; the model was compiled for "
                                                      f"['N', {xm.NUM_FEATURE}]")):
        m.run(np.zeros((4, 5), "float32"))


# Bad inputs ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("inputs,message", [
    (lambda a, b: {"a": a, "c": b}, "Model inputs are ['a', 'b']; missing ['b'], unexpected ['c']"),
    (lambda a, b: {"a": a}, "Model inputs are ['a', 'b']; missing ['b'], unexpected []"),
    (lambda a, b: {"a": a, "b": b, "c": b}, "Model inputs are ['a', 'b']; missing [], unexpected ['c']"),
    (lambda a, b: [a], "Model takes 2 inputs ['a', 'b']; got 1"),
    (lambda a, b: a, "Model takes 2 inputs ['a', 'b']; got 1"),
    (lambda a, b: [a, b, b], "Model takes 2 inputs ['a', 'b']; got 3"),
    (lambda a, b: [a.reshape(3, 2), b], "Input 'a' has shape [3, 2]; the model was compiled for [2, 3]"),
    (lambda a, b: [a[None], b], "Input 'a' has shape [1, 2, 3]; the model was compiled for [2, 3]"),
    (lambda a, b: [a, b.astype("float32")], "Input 'b' has dtype float32; the model expects int32"),
    (lambda a, b: [a.astype("complex64"), b], "Input 'a' has dtype complex64; the model expects float32"),
    (lambda a, b: 42, ("Model inputs are ['a', 'b']; expected a dict of arrays by name, a list of arrays in that "
                       "order, or one array; got int")),
])
def test_inputs_the_model_does_not_take_are_refused_naming_them(two_io, ab, inputs, message):
    m = rt.Model(two_io)
    with pytest.raises(rt.InputError, match=re.escape(message)) as caught:
        m.run(inputs(*ab))
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, RuntimeError)
    _, square = m.run(list(ab))  # the handle is still good
    np.testing.assert_array_equal(square, ab[1] * ab[1])


def test_get_input_of_an_unknown_or_unset_input_is_refused(two_io):
    m = rt.Model(two_io)
    with pytest.raises(rt.InputError, match=re.escape("'c' is not an input of this model; its inputs are ['a', 'b']")):
        m.get_input("c")
    with pytest.raises(rt.InputError, match="Input 'a' has not been set yet; run the model first"):
        m.get_input("a")


# Packages that cannot run here -----------------------------------------------------------------------------------------

def test_a_package_for_another_architecture_is_refused_before_its_library_loads(cnn, tmp_path):
    other = "aarch64" if host_arch() != "aarch64" else "x86_64"
    pkg = copy_package(cnn, tmp_path / "pkg", Compilation__Arch=other)
    (pkg / "lib" / "libneocompile_rt.so").write_bytes(b"not a library")  # never loaded
    with pytest.raises(rt.PackageError, match=rf"Compiled model is for {other} \(x86_64-linux-gnu\) but this Python runs "
                                              rf"on {host_arch()} \(machine \w+, 64-bit\); run it on a {other} device"):
        rt.Model(pkg)


def test_device_type_is_checked_with_dlrs_words(cnn, tmp_path):
    with pytest.raises(rt.PackageError, match=re.escape('Compiled model requires device type "cpu" but user gave "gpu".')):
        rt.Model(cnn, dev_type="gpu")
    pkg = copy_package(cnn, tmp_path / "pkg", Requirements__TargetDeviceType="gpu")
    with pytest.raises(rt.PackageError, match=re.escape('Compiled model requires device type "gpu" but user gave "cpu".')):
        rt.Model(pkg)
    with pytest.raises(rt.PackageError, match=re.escape('requires device type "gpu"; neocompile_rt runs models on the CPU only')):
        rt.Model(pkg, dev_type="gpu")


def test_a_newer_glibc_than_this_systems_is_refused_naming_both(cnn, tmp_path):
    pkg = copy_package(cnn, tmp_path / "pkg", Requirements__MinGlibc="GLIBC_99.1")
    with pytest.raises(rt.PackageError, match=re.escape(
            f"Compiled model needs glibc 99.1 (GLIBC_99.1, compiled.meta Requirements.MinGlibc) but this system has "
            f"glibc {system_glibc()}")):
        rt.Model(pkg)


def test_a_package_without_its_runtime_library_is_called_incomplete(cnn, tmp_path, monkeypatch):
    pkg = copy_package(cnn, tmp_path / "pkg")
    (pkg / "lib" / "libneocompile_rt.so").unlink()
    with pytest.raises(rt.PackageError, match=re.escape(f"{pkg}/lib/libneocompile_rt.so is missing: the package at "
                                                        f"{pkg} is incomplete")):
        rt.Model(pkg)
    # $NEOCOMPILE_RT_LIBRARY names another library (here: the original package's).
    monkeypatch.setenv(rt.LIBRARY_ENV, str(cnn / "lib" / "libneocompile_rt.so"))
    assert rt.Model(pkg).library == str(cnn / "lib" / "libneocompile_rt.so")
    monkeypatch.setenv(rt.LIBRARY_ENV, str(tmp_path / "nowhere.so"))
    with pytest.raises(rt.PackageError, match=re.escape(f"{rt.LIBRARY_ENV}={tmp_path}/nowhere.so: no such file")):
        rt.Model(cnn)


def test_what_is_not_a_package_is_refused_saying_what_is_expected(cnn, tmp_path):
    with pytest.raises(rt.PackageError, match=f"'{tmp_path}' is not a neocompile package: compiled.meta is missing"):
        rt.Model(tmp_path)
    with pytest.raises(rt.PackageError, match=f"'{tmp_path}/nowhere' does not exist; expected a package folder"):
        rt.Model(tmp_path / "nowhere")
    archive = tmp_path / "model-ml_c4.tar.gz"
    archive.write_bytes(b"")
    with pytest.raises(rt.PackageError, match="is a package archive; extract it first"):
        rt.Model(archive)
    pkg = copy_package(cnn, tmp_path / "pkg")
    (pkg / "compiled.meta").write_text("{not json")
    with pytest.raises(rt.PackageError, match=f"{pkg}/compiled.meta is not valid JSON"):
        rt.Model(pkg)
    with pytest.raises(rt.Error, match=r"num_threads: 0 is not valid; expected an integer >= 1"):
        rt.Model(cnn, num_threads=0)
    # Without a path: the package the module sits in, which the source tree's copy is not.
    with pytest.raises(rt.PackageError, match=re.escape(f"Model() without a path runs the package this module sits in "
                                                        f"(<package>/python/neocompile_rt.py), but {SOURCE} is not inside "
                                                        "a package")):
        rt.Model()


def stub_library(folder: Path, source: str) -> Path:
    """A shared library built from C ``source`` with zig (as neocompile builds device code)."""
    from neocompile.device import toolchain

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stub.c").write_text(source)
    lib = folder / "libneocompile_rt.so"
    subprocess.run([toolchain.zig_executable(), "cc", "-shared", "-fPIC", "-o", str(lib), str(folder / "stub.c")],
                   check=True, env=toolchain.environment(), capture_output=True, timeout=600)
    return lib


def test_a_library_of_another_abi_or_not_a_runtime_at_all_is_refused(cnn, tmp_path, monkeypatch):
    other_abi = stub_library(tmp_path / "abi2", "int nrt_abi_version(void) { return 2; }\n")
    monkeypatch.setenv(rt.LIBRARY_ENV, str(other_abi))
    with pytest.raises(rt.PackageError, match=re.escape(f"{other_abi} has runtime ABI 2 but this neocompile_rt.py speaks "
                                                        "ABI 1; use the neocompile_rt.py that came with the package")):
        rt.Model(cnn)
    partial = stub_library(tmp_path / "partial", "int nrt_abi_version(void) { return 1; }\n")
    monkeypatch.setenv(rt.LIBRARY_ENV, str(partial))
    with pytest.raises(rt.PackageError, match=rf"{partial} is not a neocompile runtime library \(.*undefined symbol: nrt_"):
        rt.Model(cnn)


LOAD = r"""
import sys
if sys.argv[2] == "with-tvm":
    import tvm  # the build machine's case: Python's TVM (libstdc++) loaded beside the package's runtime
sys.path.insert(0, sys.argv[3])
import neocompile_rt
try:
    neocompile_rt.Model(sys.argv[1])
except neocompile_rt.Error as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("tvm", ["without-tvm", "with-tvm"])
def test_a_failure_of_the_c_runtime_raises_its_text(cnn, tmp_path, tvm):
    pkg = copy_package(cnn, tmp_path / "pkg")
    (pkg / "compiled.params").write_bytes(b"garbage")
    for path in (pkg, pkg / "compiled.so"):  # the library's path works as the folder does
        # In a child: an exception that escapes the C runtime would take pytest down with it.
        proc = subprocess.run([PYTHON, "-c", LOAD, str(path), tvm, str(SOURCE.parent)], capture_output=True, text=True,
                              timeout=300, check=False)
        assert proc.returncode == 0, f"rc {proc.returncode}: {proc.stderr[-2000:]}"
        assert proc.stdout.startswith("PackageError compiled.params: not a readable weights file"), proc.stdout


def test_a_package_missing_a_tvm_library_is_refused_naming_it(cnn, tmp_path):
    pkg = copy_package(cnn, tmp_path / "pkg")
    (pkg / "lib" / "libtvm_runtime.so").unlink()
    # In a child without tvm: in this process the wheel's libtvm_runtime.so is loaded and would stand in for it.
    proc = subprocess.run([PYTHON, "-c", LOAD, str(pkg), "without-tvm", str(SOURCE.parent)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"PackageError Cannot load {pkg}/lib/libneocompile_rt.so: libtvm_runtime.so: cannot "
                                  "open shared object file"), proc.stdout


def test_importing_tvm_after_a_package_runtime_is_refused_not_a_crash(cnn):
    """Python's tvm after a package's TVM runtime would register every function twice and abort the process; the
    binding refuses the import instead, saying what to do. tvm imported first is fine (neocompile.runtime does)."""
    script = ("import sys; sys.path.insert(0, sys.argv[2]); import numpy as np, neocompile_rt\n"
              "m = neocompile_rt.Model(sys.argv[1]); m.run(np.zeros(m.input_shapes['data'], 'float32'))\n"
              "try:\n    import tvm\nexcept ImportError as exc:\n    print('refused:', exc)\n"
              "print(len(m.run(np.zeros(m.input_shapes['data'], 'float32'))))\n")
    proc = subprocess.run([PYTHON, "-c", script, str(cnn), str(SOURCE.parent)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused: tvm cannot be imported after neocompile_rt loaded a package's TVM runtime" in proc.stdout
    assert "Import tvm before creating the first neocompile_rt.Model" in proc.stdout and proc.stdout.endswith("1\n")
    first = subprocess.run([PYTHON, "-c", "import tvm; " + script, str(cnn), str(SOURCE.parent)],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and "refused" not in first.stdout, first.stderr[-2000:]


# Threads and lifetime --------------------------------------------------------------------------------------------------

def test_two_handles_in_two_threads_and_one_handle_from_two_threads_give_the_right_results(cnn, x, reference):
    want = reference(x)
    inputs = [x * k for k in (1.0, -0.5, 2.0)]
    wants = [reference(v) for v in inputs]
    shared = rt.Model(cnn, num_threads=2)
    own = [rt.Model(cnn, num_threads=1) for _ in range(2)]
    failures = []

    def work(model, turn):
        try:
            for i in range(60):
                k = (i + turn) % len(inputs)
                np.testing.assert_allclose(model.run(inputs[k])[0], wants[k], rtol=1e-5, atol=1e-6)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(m, t)) for t, m in enumerate([shared, shared, *own])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[0]
    np.testing.assert_allclose(shared.run(x)[0], want, rtol=1e-5, atol=1e-6)


def test_num_threads_is_the_handles_and_can_be_changed(cnn, x, monkeypatch):
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    monkeypatch.setenv("NEOCOMPILE_NUM_THREADS", "3")
    m = rt.Model(cnn)
    assert m.num_threads == 3
    want = m.run(x)[0]
    m.num_threads = 1
    assert m.num_threads == 1
    np.testing.assert_allclose(m.run(x)[0], want, rtol=1e-6, atol=1e-7)
    assert rt.Model(cnn, num_threads=2).num_threads == 2
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(rt.Error, match=re.escape(f"num_threads: {bad!r} is not valid; expected an integer >= 1")):
            m.num_threads = bad


def test_close_frees_once_and_a_closed_model_says_so(cnn, x):
    with rt.Model(cnn) as m:
        m.run(x)
    m.close()  # again: nothing happens
    with pytest.raises(rt.Error, match="this Model is closed"):
        m.run(x)
    with pytest.raises(rt.Error, match="this Model is closed"):
        _ = m.num_threads
    assert "closed" in repr(m)
    del m  # __del__ after close: nothing happens


# The copy in every package, and the distribution -----------------------------------------------------------------------

CHECK = r"""
import sys
import numpy as np
import neocompile_rt
m = neocompile_rt.Model(*sys.argv[1:-1])
out = m.run(np.load(sys.argv[-1]))[0]
assert "tvm" not in sys.modules and "neocompile" not in sys.modules, sorted(sys.modules)
print(neocompile_rt.__file__)
np.save(sys.argv[-1], out)
"""


def run_isolated(path_entries: list[Path], args: list[str], x: np.ndarray, tmp: Path) -> tuple[str, np.ndarray]:
    """Run CHECK in ``python -I -S`` (no site-packages, no environment, no current folder) with only
    ``path_entries`` added to the standard library's path; returns the module file it imported and the output."""
    data = tmp / "x.npy"
    np.save(data, x)
    code = f"import sys; sys.path[:0] = {[str(p) for p in path_entries]!r}\n" + CHECK
    proc = subprocess.run([PYTHON, "-I", "-S", "-c", code, *args, str(data)], capture_output=True, text=True,
                          cwd=tmp, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), np.load(data)


@pytest.fixture(scope="module")
def numpy_only(tmp_path_factory) -> Path:
    """A folder on which numpy (and its bundled libraries) is importable, and nothing else of the venv."""
    folder = tmp_path_factory.mktemp("numpy-only")
    site = Path(np.__file__).resolve().parents[1]
    for name in ("numpy", "numpy.libs"):
        if (site / name).exists():
            (folder / name).symlink_to(site / name)
    return folder


def test_the_package_carries_the_binding_and_runs_its_own_model_without_tvm(cnn, x, reference, numpy_only, tmp_path):
    copy = cnn / "python" / "neocompile_rt.py"
    assert copy.read_bytes() == SOURCE.read_bytes()
    used, out = run_isolated([cnn / "python", numpy_only], [], x, tmp_path)  # Model(): the package it sits in
    assert used == str(copy)
    np.testing.assert_allclose(out, reference(x), rtol=1e-5, atol=1e-6)


def test_distribution_links_the_one_source(tmp_path):
    link = DIST / "neocompile_rt.py"
    assert link.is_symlink() and os.readlink(link) == "../neocompile/device/python/neocompile_rt.py"
    assert link.resolve() == SOURCE


def test_wheel_holds_the_module_and_needs_only_numpy_and_runs_a_package_without_tvm(cnn, x, reference, numpy_only,
                                                                                   tmp_path):
    wheels = tmp_path / "wheels"
    leftovers = [DIST / "build", DIST / "neocompile_runtime.egg-info"]  # setuptools builds in the source folder
    existed = [p.exists() for p in leftovers]
    try:
        proc = subprocess.run([PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                               str(DIST)], capture_output=True, text=True, timeout=300, check=False)
    finally:
        for path, was in zip(leftovers, existed):
            if not was:
                shutil.rmtree(path, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = wheels.glob("*.whl")
    assert wheel.name == f"neocompile_runtime-{neocompile.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert zf.read("neocompile_rt.py") == SOURCE.read_bytes()  # the file, not a link
        metadata = zf.read(f"neocompile_runtime-{neocompile.__version__}.dist-info/METADATA").decode()
        unpacked = tmp_path / "unpacked"
        zf.extractall(unpacked)
    assert {n for n in names if not n.startswith("neocompile_runtime-")} == {"neocompile_rt.py"}
    assert re.findall(r"^Requires-Dist: (.*)$", metadata, flags=re.MULTILINE) == ["numpy"]
    assert re.search(r"^Requires-Python: >=3\.7$", metadata, flags=re.MULTILINE)
    used, out = run_isolated([unpacked, numpy_only], [str(cnn)], x, tmp_path)
    assert used == str(unpacked / "neocompile_rt.py")
    np.testing.assert_allclose(out, reference(x), rtol=1e-5, atol=1e-6)
