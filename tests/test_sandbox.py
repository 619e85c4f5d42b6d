"""The load stage's sandbox: hostile model files run nothing, and the child is confined as documented."""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tokenize
from pathlib import Path

import numpy as np
import pytest

import neocompile
from neocompile import modelzoo, sandbox
from neocompile.errors import InputConfigurationError, JobTimeout, TargetError
from neocompile.loaders import get_loader
from neocompile.sandbox import Limits, Sandbox
from neocompile.verify import random_inputs
from tests.hostile import HOSTILE, NAIVE

NEVER = "neocompile never unpickles Python objects from an untrusted archive"


@pytest.fixture
def marker_dir():
    """A folder the sandbox's user can write to: a payload that ran in the sandbox would leave its marker here."""
    path = Path(tempfile.mkdtemp(prefix="neocompile-marker-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def model_dir(tmp_path):
    root = tmp_path / "model"
    root.mkdir()
    (root / "model.onnx").write_bytes(modelzoo.small_cnn(size=32).SerializeToString())
    (root / "model.onnx").chmod(0o600)
    return root


# -- hostile files through the real pipeline ---------------------------------------------------------------------
ROUTES = ["legacy-pickle-pth", "zip-pickle-pth", "torchscript-data-pkl", "torchscript-constants-pkl", "pt2-sample-inputs"]


@pytest.mark.parametrize("name", ROUTES)
def test_a_hostile_pickle_fails_the_job_as_input_configuration_and_runs_nothing(name, marker_dir, tmp_path):
    marker = marker_dir / "pwned"
    filename, data = HOSTILE[name](marker)
    archive = modelzoo.write_archive(tmp_path / "model.tar.gz", {filename: data})
    with pytest.raises(InputConfigurationError, match=rf"Unable to load .*{filename}.*posix\.system.*{NEVER}") as info:
        neocompile.compile_model(str(archive), "PYTORCH", str(tmp_path / "out"), [[2, 4]], target_device="ml_c5")
    assert "corrupt" not in str(info.value)
    assert not marker.exists(), f"the payload of {name} ran"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_each_hostile_file_really_runs_its_payload_when_loaded_as_torch_allows(marker_dir, tmp_path):
    # The control for the test above: every payload is live, so its marker's absence there means it did not run.
    script = ["import sys"]
    for name in HOSTILE:
        filename, data = HOSTILE[name](marker_dir / name)
        path = tmp_path / name / filename
        path.parent.mkdir()
        path.write_bytes(data)
        script.append(f"path = {str(path)!r}\ntry:\n    " + NAIVE[name] + "\nexcept Exception:\n    pass")
    proc = subprocess.run([sys.executable, "-c", "\n".join(script)], capture_output=True, text=True, timeout=300)
    assert sorted(p.name for p in marker_dir.iterdir()) == sorted(HOSTILE), proc.stderr[-2000:]


def test_the_sandbox_can_write_where_the_payloads_aim(marker_dir, model_dir):
    # Also a control: a payload that did run in the sandbox would have left its marker.
    with Sandbox(model_dir, "model.onnx") as box:
        box.call("tests.sandbox_probes:touch", {"path": str(marker_dir / "made")})
    assert (marker_dir / "made").exists()


# -- the confinement ---------------------------------------------------------------------------------------------
def test_the_child_has_no_secrets_no_network_its_limits_and_no_root(model_dir, tmp_path, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GITHUB_TOKEN", "DATABASE_PASSWORD"):
        monkeypatch.setenv(var, "do-not-leak")
    secret_dir = Path(tempfile.mkdtemp(prefix="neocompile-secret-"))
    secret_dir.chmod(0o755)  # reachable: only the file's own mode keeps another user out
    (secret_dir / "secret").write_text("s3cr3t")
    (secret_dir / "secret").chmod(0o600)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3):  # reachable from this process
            listener.accept()[0].close()
        with Sandbox(model_dir, "model.onnx", scratch_in=tmp_path) as box:
            seen = box.call("tests.sandbox_probes:describe",
                            {"port": port, "model": "model.onnx", "secret": str(secret_dir / "secret")})
            limits, report = box.limits, box.report
        listener.settimeout(0.5)
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
        shutil.rmtree(secret_dir, ignore_errors=True)

    assert not [k for k in seen["env"] if "AWS" in k or "TOKEN" in k or "PASSWORD" in k or "SECRET" in k]
    allowed = {"PATH", "HOME", "TMPDIR", "XDG_CACHE_HOME", "PYTHONDONTWRITEBYTECODE", "MALLOC_ARENA_MAX",
               "TVM_FFI_DISABLE_TORCH_C_DLPACK", "LC_CTYPE", *sandbox.PASSED_ENV}
    assert set(seen["env"]) <= allowed, set(seen["env"]) - allowed
    assert seen["env"]["HOME"].startswith("/proc/self/fd/") and seen["env"]["TMPDIR"].startswith("/proc/self/fd/")
    assert Path(seen["home_is"]).parent.parent == tmp_path and not list(tmp_path.glob("neocompile-load-*"))
    if not report["network"]["isolated"]:
        pytest.fail(f"the load sandbox got no network namespace as uid {os.geteuid()}: {report['network']['reason']}")
    assert seen["connect"] != "connected", "the sandbox reached a TCP listener on 127.0.0.1"
    assert seen["limits"] == {
        "RLIMIT_AS": [limits.memory_bytes] * 2, "RLIMIT_CORE": [0, 0], "RLIMIT_FSIZE": [limits.file_bytes] * 2,
        "RLIMIT_NOFILE": [limits.open_files] * 2, "RLIMIT_CPU": [limits.cpu_seconds] * 2,
    }
    assert seen["no_new_privs"] == "1"
    assert seen["pgid"] == os.getpgid(0), "the child must stay in the job's process group (the deadline kills it)"
    assert seen["cwd_files"] == ["model.onnx"] and seen["read_model"]
    assert not seen["write_model_folder"] and seen["write_home"] and seen["write_tmpdir"]
    if os.geteuid() == 0:
        assert (seen["uid"], seen["euid"], seen["gid"], seen["groups"]) == (65534, 65534, 65534, [])
        assert not seen["read_secret"], "the sandbox read a root-only file"


@pytest.mark.parametrize("sig", ["SIGSEGV", "SIGABRT", "SIGKILL"])
def test_a_child_killed_by_a_signal_is_an_input_configuration_error_naming_the_model(sig, model_dir):
    with Sandbox(model_dir, "model.onnx") as box:
        with pytest.raises(InputConfigurationError, match=rf"Loading model.onnx crashed the loader: it was killed by {sig}"):
            box.call("tests.sandbox_probes:crash", {"signal": sig})


def test_running_out_of_memory_is_an_input_configuration_error_naming_the_limit(model_dir):
    limits = Limits(memory_bytes=512 << 20, file_bytes=1 << 30, open_files=256, cpu_seconds=60)
    with Sandbox(model_dir, "model.onnx", limits) as box:
        assert box.call("tests.sandbox_probes:allocate", {"bytes": 64 << 20}) == 64 << 20
        with pytest.raises(InputConfigurationError,
                           match=r"Loading model.onnx ran out of memory in the load sandbox \(limits: memory 0.5 GiB \(NEOCOMPILE_LOAD_MEMORY_BYTES\)"):
            box.call("tests.sandbox_probes:allocate", {"bytes": 1 << 30})


def test_the_memory_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("NEOCOMPILE_LOAD_MEMORY_BYTES", str(3 << 30))
    assert Limits.for_model(10 << 20).memory_bytes == 3 << 30
    monkeypatch.setenv("NEOCOMPILE_LOAD_MEMORY_BYTES", "lots")
    with pytest.raises(ValueError, match="NEOCOMPILE_LOAD_MEMORY_BYTES='lots' is not valid"):
        Limits.for_model(0)


def test_a_neo_error_in_the_child_arrives_as_the_same_class_and_message(model_dir):
    with Sandbox(model_dir, "model.onnx") as box:
        with pytest.raises(TargetError) as info:
            box.call("tests.sandbox_probes:fail", {"class": "TargetError", "message": "TargetDevice: 'x' is not known"})
    assert type(info.value) is TargetError and str(info.value) == "TargetDevice: 'x' is not known"


def test_a_deadline_kills_the_child(model_dir):
    with Sandbox(model_dir, "model.onnx") as box:
        start = time.monotonic()
        with pytest.raises(JobTimeout, match="exceeded StoppingCondition.MaxRuntimeInSeconds"):
            box.call("tests.sandbox_probes:sleep", {"seconds": 300}, deadline=time.monotonic() + 5)
        took = time.monotonic() - start
        with box.open("pid") as f:
            pid = int(f.read())
    assert took < 30
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- the load stage ----------------------------------------------------------------------------------------------
def test_a_sandboxed_load_gives_the_module_and_reference_of_a_direct_load(model_dir):
    import tvm

    loader, shapes = get_loader("ONNX"), {"data": (1, 3, 32, 32)}
    loaded, detail = sandbox.load_model(loader, model_dir, shapes, {})
    direct = loader.load(model_dir / "model.onnx", shapes, {})
    tvm.ir.assert_structural_equal(loaded.mod, direct.mod, map_free_vars=True)
    assert (loaded.inputs, loaded.outputs, loaded.route, loaded.framework_version, loaded.data_input_config) == (
        direct.inputs, direct.outputs, direct.route, direct.framework_version, direct.data_input_config)
    seeded = random_inputs(loaded.inputs)
    for got, want in zip(loaded.reference(seeded), direct.reference(seeded)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="recorded in the load sandbox for the seeded verification inputs only"):
        loaded.reference([seeded[0] + 1])
    assert detail.startswith(direct.route + "; sandbox: ")
    # onnxruntime ran in a sandbox of its own, not on top of the load child's TVM and weights
    assert loaded.model_details["Reference"].startswith("onnx in a sandbox of its own (neocompile's own interpreter")
    assert not list(model_dir.parent.glob("neocompile-load-*")), "the scratch folder outlived the load"
    if os.geteuid() == 0:
        assert detail.endswith("sandbox: uid 65534, no network")


def test_without_verification_no_reference_is_recorded(model_dir):
    loaded, _ = sandbox.load_model(get_loader("ONNX"), model_dir, {"data": (1, 3, 32, 32)}, {"verify": False})
    assert loaded.reference is None


def test_a_load_error_in_the_pipeline_reads_as_it_does_from_the_loader(model_dir, tmp_path):
    archive = modelzoo.onnx_archive(tmp_path / "m.tar.gz", modelzoo.small_cnn(size=32))
    with pytest.raises(InputConfigurationError) as direct:
        get_loader("ONNX").load(model_dir / "model.onnx", {"data": (1, 3, 16, 16)}, {})
    events = []
    with pytest.raises(InputConfigurationError) as piped:
        neocompile.compile_model(str(archive), "ONNX", str(tmp_path / "out"), {"data": [1, 3, 16, 16]},
                                 target_device="ml_c5", progress=events.append)
    assert type(piped.value) is type(direct.value) and str(piped.value) == str(direct.value)
    assert [(e.stage, e.status) for e in events if e.status != "start"][-1] == ("load", "failed")


# -- the rule, for every loader to come --------------------------------------------------------------------------
def _code_only(path: Path) -> str:
    """The module's source without comments and string literals."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return " ".join(t.string for t in tokens if t.type not in (tokenize.COMMENT, tokenize.STRING))


def test_no_module_unpickles_with_code_execution():
    offenders = []
    for path in sorted(Path(neocompile.__file__).parent.rglob("*.py")):
        code = _code_only(path)
        for bad in ("weights_only = False", "allow_pickle = True", "pickle . load (", "pickle . loads (", "dill",
                    "cloudpickle", "joblib . load", "marshal . loads"):
            if bad in code:
                offenders.append(f"{path.name}: {bad}")
        for part in code.split("torch . load (")[1:]:
            depth, end = 1, 0
            while depth and end < len(part):
                depth += {"(": 1, ")": -1}.get(part[end], 0)
                end += 1
            if "weights_only = True" not in part[:end]:
                offenders.append(f"{path.name}: torch.load without weights_only=True")
    assert not offenders
