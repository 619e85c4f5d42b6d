"""Thread control of compiled packages: Model(num_threads=...), `neocompile run --threads`, `neo_run --threads`,
NEOCOMPILE_NUM_THREADS, and the count a package was scheduled for (compiled.meta Compilation.NumThreads)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

import neocompile
from neocompile.device import runner
from neocompile.errors import ValidationError
from neocompile.runtime import THREADS_ENV, Model
from neocompile.targets import get_target
from tests.models import SMALL_CONFIG, SMALL_SHAPE, small_onnx_archive

BIN = Path(sys.executable).parent
USABLE = len(os.sched_getaffinity(0))
THREAD_VARS = (THREADS_ENV, "TVM_NUM_THREADS")


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """A small CNN compiled for ml_c4 (runs natively on any AVX2 x86 CPU), as the .tar.gz compile-model writes."""
    tmp = tmp_path_factory.mktemp("threads")
    result = neocompile.compile_model(str(small_onnx_archive(tmp)), "ONNX", str(tmp / "out"), SMALL_CONFIG,
                                      target_device="ml_c4")
    return Path(result.artifact_uri)


@pytest.fixture(scope="module")
def unpacked(package, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(package) as tar:
        tar.extractall(folder, filter="tar")
    return folder


@pytest.fixture(autouse=True)
def no_thread_settings(monkeypatch):
    """The tests set the thread variables themselves; the caller's (e.g. a benchmark's TVM_NUM_THREADS) must not count."""
    for var in THREAD_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SMALL_SHAPE).astype("float32")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    return {**env, **extra}


# Model(num_threads=...) ------------------------------------------------------------------------------------------------

def test_model_uses_every_usable_core_by_default(package):
    assert Model(package).num_threads == USABLE


def test_outputs_are_the_same_whatever_the_thread_count(package, x):
    default = Model(package).run(x)[0]
    for n in (1, 2, 3):
        np.testing.assert_allclose(Model(package, num_threads=n).run(x)[0], default, rtol=1e-6, atol=1e-7)


def test_environment_sets_the_count_and_the_argument_wins(package, monkeypatch):
    monkeypatch.setenv("TVM_NUM_THREADS", "3")
    assert Model(package).num_threads == 3
    monkeypatch.setenv(THREADS_ENV, "1")
    assert Model(package).num_threads == 1  # NEOCOMPILE_NUM_THREADS before TVM_NUM_THREADS
    assert Model(package, num_threads=2).num_threads == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_num_threads_is_refused_naming_it(bad):
    with pytest.raises(ValidationError, match=rf"num_threads: {bad!r} is not valid; expected an integer >= 1"):
        Model("nowhere.tar.gz", num_threads=bad)


@pytest.mark.parametrize("var", THREAD_VARS)
def test_bad_thread_variable_is_refused_naming_it(monkeypatch, var):
    monkeypatch.setenv(var, "two")
    with pytest.raises(ValidationError, match=f"{var}: 'two' is not valid; expected an integer >= 1"):
        Model("nowhere.tar.gz")


PROBE = r"""
import json, os, sys
import numpy as np
import tvm
from neocompile import runtime

tasks = lambda: set(os.listdir("/proc/self/task"))
caller_mask = os.sched_getaffinity(0)
report = []
for requested in json.loads(sys.argv[2]):
    model = runtime.Model(sys.argv[1], num_threads=requested)
    before = tasks()
    model.run(np.zeros(model.input_shapes[model.input_names[0]], "float32"))
    new = tasks() - before
    report.append({
        "num_threads": model.num_threads,
        "new_threads": len(new),
        "new_masks": [sorted(os.sched_getaffinity(int(t))) for t in new],
        "pool_reports": tvm.get_global_func("runtime.NumThreads")(),
        "caller_mask_kept": os.sched_getaffinity(0) == caller_mask,
    })
print(json.dumps(report))
"""


def test_a_run_uses_a_thread_pool_of_the_requested_size_free_on_every_usable_core(package):
    # A fresh process, so that the threads a run adds are its pool's. The C API runs the model on the calling thread
    # with a TVM pool of n - 1 workers besides it, resized when the count differs from that thread's last one; TVM
    # keeps the workers it made, so only a count above every earlier one adds threads.
    requested = [None, 1, 2, 2, 1]
    proc = subprocess.run([sys.executable, "-c", PROBE, str(package), json.dumps(requested)], capture_output=True,
                          text=True, env=clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    workers = 0
    for n, got in zip(requested, json.loads(proc.stdout)):
        want = n or USABLE
        new = max(0, want - 1 - workers)
        workers += new
        assert (got["num_threads"], got["new_threads"], got["pool_reports"]) == (want, new, want), (n, got)
        # TVM would pin them (to half of the machine's CPUs by default, whatever the mask) and the caller with them.
        assert got["new_masks"] == [sorted(os.sched_getaffinity(0))] * new
        assert got["caller_mask_kept"]


# bin/neo_run --threads ------------------------------------------------------------------------------------------------

def neo_run(unpacked: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(unpacked / "bin" / "neo_run"), *args], capture_output=True, text=True, timeout=120,
                          env=clean_env(LD_LIBRARY_PATH=str(unpacked / "lib"), **env))


def run_in(unpacked: Path, io: Path, x: np.ndarray, *flags: str, **env: str) -> tuple[int, np.ndarray]:
    """neo_run on ``x``: the thread count it reports in timing.txt and its output."""
    io.mkdir()
    runner.write_inputs(io, [x])
    proc = neo_run(unpacked, *flags, str(unpacked / "compiled.so"), str(io), **env)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    timing = dict(line.split() for line in (io / "timing.txt").read_text().splitlines())
    return int(timing["threads"]), runner.read_outputs(io)[0]


@pytest.mark.parametrize("flags, env, want", [
    ([], {}, USABLE),
    (["--threads", "1"], {}, 1),
    (["--threads=3"], {}, 3),
    ([], {THREADS_ENV: "1"}, 1),
    ([], {"TVM_NUM_THREADS": "3"}, 3),
    ([], {THREADS_ENV: "2", "TVM_NUM_THREADS": "1"}, 2),
    (["--threads", "3"], {THREADS_ENV: "1"}, 3),
], ids=["default", "flag", "flag=", "env", "tvm-env", "env-over-tvm-env", "flag-over-env"])
def test_neo_run_threads_flag_then_environment_then_every_usable_core(unpacked, tmp_path, x, flags, env, want):
    threads, out = run_in(unpacked, tmp_path / "io", x, *flags, **env)
    assert threads == want
    np.testing.assert_allclose(out, Model(unpacked, num_threads=1).run(x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--threads", "0", "MODEL", "io"], "--threads: '0' is not valid; expected an integer >= 1"),
    (["--threads", "abc", "MODEL", "io"], "--threads: 'abc' is not valid; expected an integer >= 1"),
    (["--threads=-2", "--load-only", "MODEL"], "--threads: '-2' is not valid; expected an integer >= 1"),
    (["MODEL", "io", "--threads"], "expected <model> <io-dir>, got 3 argument(s)"),  # options come first
    (["--threads"], "--threads needs a value: an integer >= 1"),
    (["--thread", "2", "MODEL", "io"], "unknown option --thread"),
])
def test_neo_run_refuses_a_bad_thread_count_as_bad_usage(unpacked, args, message):
    proc = neo_run(unpacked, *[str(unpacked / "compiled.so") if a == "MODEL" else a for a in args])
    assert (proc.returncode, proc.stdout) == (2, "")
    assert f"neo_run: {message}\nusage: " in proc.stderr


def test_neo_run_refuses_a_bad_thread_variable_as_bad_usage(unpacked):
    proc = neo_run(unpacked, "--load-only", str(unpacked / "compiled.so"), **{THREADS_ENV: "0"})
    assert (proc.returncode, proc.stdout) == (2, "")
    assert f"neo_run: {THREADS_ENV}: '0' is not valid; expected an integer >= 1" in proc.stderr


@pytest.mark.parametrize("flags", [[], ["--threads", "2"]])
def test_neo_run_load_only_form_still_works(unpacked, flags):
    proc = neo_run(unpacked, *flags, "--load-only", str(unpacked / "compiled.so"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"neo_run: {unpacked / 'compiled.so'} loaded\n"


def test_runner_passes_the_thread_count_to_neo_run(unpacked, x):
    target = get_target("ml_c4")
    cmd, _ = runner.driver_command(unpacked / "bin" / "neo_run", unpacked / "compiled.so", Path("io"), target,
                                   unpacked / "lib", num_threads=2)
    assert cmd[1:] == ["--threads", "2", str(unpacked / "compiled.so"), "io"]
    out = runner.run_library(unpacked / "compiled.so", target, [x], package_dir=unpacked, num_threads=1)[0]
    np.testing.assert_allclose(out, Model(unpacked).run(x)[0], rtol=1e-5, atol=1e-6)


# neocompile run --threads and the manifest ------------------------------------------------------------------------------

def neocompile_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "neocompile"), *args], capture_output=True, text=True, env=clean_env(**env),
                          timeout=300)


def test_cli_run_threads_sets_the_count_it_reports(package):
    proc = neocompile_cli("run", str(package), "--threads", "1", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    assert "(seeded random inputs, in process, 1 thread)" in proc.stdout.splitlines()[-1]


@pytest.mark.parametrize("value", ["0", "-2", "abc"])
def test_cli_run_refuses_a_bad_threads_flag_as_bad_usage(package, value):
    proc = neocompile_cli("run", str(package), f"--threads={value}")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert f"argument --threads: '{value}' is not valid; expected an integer >= 1" in proc.stderr


def test_cli_run_refuses_a_bad_thread_variable_naming_it(package):
    proc = neocompile_cli("run", str(package), **{THREADS_ENV: "many"})
    assert proc.returncode == 1
    assert f"{THREADS_ENV}: 'many' is not valid; expected an integer >= 1" in proc.stderr


def test_package_records_no_thread_count_when_the_target_sets_none(unpacked):
    meta = json.loads((unpacked / "compiled.meta").read_text())
    assert "num-cores" not in meta["Compilation"]["Target"]
    assert meta["Compilation"]["NumThreads"] is None  # scheduled for any count: every core at run time
