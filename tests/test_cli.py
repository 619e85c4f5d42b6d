"""End-to-end tests through the real `compile-model` / `neocompile` commands (subprocesses)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from neocompile import modelzoo
from tests.models import SMALL_CONFIG, small_onnx_archive, tar_with

BIN = Path(sys.executable).parent


def cli(*args: str, env: dict | None = None, tool: str = "compile-model", timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, env=full_env, timeout=timeout)


def compile_args(model: Path | str, out: Path | str, target: str = "ml_c4", config: str = SMALL_CONFIG, framework: str = "ONNX"):
    return ["--framework", framework, "--model-uri", str(model), "--data-input-config", config,
            "--target-device", target, "--output-location", str(out)]


def meta_of(package: Path) -> dict:
    with tarfile.open(package) as tar:
        return json.load(tar.extractfile("compiled.meta"))


def elf_header(package: Path) -> bytes:
    with tarfile.open(package) as tar:
        return tar.extractfile("compiled.so").read(64)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    return small_onnx_archive(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def host_package(example, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out")
    proc = cli(*compile_args(example, out))
    assert proc.returncode == 0, proc.stderr
    return out / "model-ml_c4.tar.gz"


def test_compile_writes_neo_named_package_with_stage_progress(host_package):
    assert host_package.is_file()
    with tarfile.open(host_package) as tar:
        names = set(tar.getnames())
    assert {"compiled.so", "compiled.meta", "verification.json", "lib/libtvm_runtime.so", "bin/neo_run"} <= names


def test_progress_names_every_stage_and_stdout_is_the_artifact(example, tmp_path):
    proc = cli(*compile_args(example, tmp_path))
    assert proc.returncode == 0, proc.stderr
    for stage in ("fetch", "extract", "load", "compile", "verify", "package", "upload"):
        assert f"[{stage:<7}] ok" in proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "model-ml_c4.tar.gz")


def test_manifest_records_signature_versions_target_and_digests(host_package, tmp_path):
    meta = meta_of(host_package)
    assert meta["Requirements"]["TargetDevice"] == "ML_C4" and meta["Requirements"]["TargetDeviceType"] == "cpu"
    assert meta["Requirements"]["MinGlibc"].startswith("GLIBC_2.") and meta["Requirements"]["ReferenceOS"]["Glibc"] == "2.26"
    comp = meta["Compilation"]
    assert comp["TVMVersion"] == "0.27.0.post1" and comp["TVMFFIVersion"] == "0.1.14.post1"
    assert comp["Target"]["mcpu"] == "core-avx2" and comp["Triple"] == "x86_64-linux-gnu"
    assert comp["Compiler"].startswith("neocompile ")
    assert meta["Model"]["Inputs"] == [{"name": "data", "dtype": "float32", "shape": [1, 3, 32, 32]}]
    assert meta["Model"]["Outputs"] == [{"name": "prob", "dtype": "float32", "shape": [1, 10]}]
    assert meta["Verification"]["status"] == "passed" and meta["Verification"]["mode"] == "native: bin/neo_run"
    # Every other file's BLAKE2 digest is recorded and right.
    with tarfile.open(host_package) as tar:
        tar.extractall(tmp_path, filter="data")
    from neocompile.digest import blake2b_file

    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()} - {"compiled.meta"}
    assert set(meta["Files"]) == files
    for rel, info in meta["Files"].items():
        assert info["blake2b"] == blake2b_file(tmp_path / rel)


def test_verification_report_has_error_numbers(host_package):
    with tarfile.open(host_package) as tar:
        report = json.load(tar.extractfile("verification.json"))
    (row,) = report["outputs"]
    assert report["status"] == "passed" and row["name"] == "prob"
    assert 0 <= row["max_abs_error"] < 1e-4 and row["within_tolerance"]


def test_neocompile_run_executes_the_host_package(host_package):
    proc = cli("run", str(host_package), "--repeat", "3", tool="neocompile")
    assert proc.returncode == 0, proc.stderr
    assert "prob: shape [1, 10] float32" in proc.stdout and "latency: median" in proc.stdout


def test_rasp3b_is_cross_compiled_for_armv7_hard_float(example, tmp_path):
    proc = cli(*compile_args(example, tmp_path, target="rasp3b"))
    assert proc.returncode == 0, proc.stderr
    package = tmp_path / "model-rasp3b.tar.gz"
    head = elf_header(package)
    assert head[:4] == b"\x7fELF" and head[4] == 1 and int.from_bytes(head[18:20], "little") == 40  # ELFCLASS32, EM_ARM
    assert int.from_bytes(head[36:40], "little") & 0x400  # EF_ARM_ABI_FLOAT_HARD
    meta = meta_of(package)
    assert meta["Compilation"]["FloatABI"] == "hard" and meta["Compilation"]["Arch"] == "armv7"
    assert meta["Compilation"]["Target"]["mfloat-abi"] == "hard"
    # No armv7 wheel exists: the runtime is cross-built from the wheel's sources, then the package runs under qemu-arm.
    assert meta["Verification"] == {"status": "passed", "mode": "emulated: qemu-arm -cpu max bin/neo_run"}
    assert "lib/libtvm_runtime.so" in meta["Runtime"]["Bundled"] and "bin/neo_run" in meta["Runtime"]["Bundled"]


@pytest.mark.parametrize("target", ["rk3399", "jetson_nano"])
def test_aarch64_devices_are_cross_compiled_and_emulated(example, tmp_path, target):
    proc = cli(*compile_args(example, tmp_path, target=target))
    assert proc.returncode == 0, proc.stderr
    package = tmp_path / f"model-{target}.tar.gz"
    head = elf_header(package)
    assert head[4] == 2 and int.from_bytes(head[18:20], "little") == 183  # ELFCLASS64, EM_AARCH64
    meta = meta_of(package)
    if target == "rk3399":
        assert meta["Verification"]["status"] == "passed" and meta["Verification"]["mode"].startswith("emulated: qemu-aarch64")
        assert "lib/libtvm_runtime.so" in meta["Runtime"]["Bundled"]
    else:  # GPU device: host code linked for real, device needs stated plainly
        assert meta["Requirements"]["TargetDeviceType"] == "gpu"
        assert meta["Compilation"]["DeviceCode"] == "cuda-source"
        assert any("CUDA" in need for need in meta["Requirements"]["DeviceNeeds"])
        assert meta["Verification"]["status"] == "skipped"


def test_target_platform_names_the_package_os_arch(example, tmp_path):
    args = compile_args(example, tmp_path)
    i = args.index("--target-device")
    args[i:i + 2] = ["--target-platform", "Os=LINUX,Arch=ARM64"]
    proc = cli(*args, "--compiler-options", "{'mcpu': 'cortex-a72', 'mattr': ['+neon']}")
    assert proc.returncode == 0, proc.stderr
    meta = meta_of(tmp_path / "model-LINUX_ARM64.tar.gz")
    assert meta["Compilation"]["Target"]["mcpu"] == "cortex-a72"
    assert meta["Compilation"]["TargetPlatform"] == {"Os": "LINUX", "Arch": "ARM64", "Accelerator": None}


def test_cli_input_json_takes_a_create_compilation_job_body(example, tmp_path):
    body = {
        "CompilationJobName": "from-json-1",
        "RoleArn": "arn:aws:iam::123456789012:role/neo",
        "InputConfig": {"S3Uri": str(example), "Framework": "ONNX", "DataInputConfig": SMALL_CONFIG},
        "OutputConfig": {"S3OutputLocation": str(tmp_path / "o"), "TargetDevice": "ml_c4"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 300},
    }
    (tmp_path / "request.json").write_text(json.dumps(body))
    proc = cli("--cli-input-json", f"file://{tmp_path / 'request.json'}", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["CompilationJobName"] == "from-json-1"
    assert result["S3ModelArtifacts"] == str(tmp_path / "o" / "model-ml_c4.tar.gz")
    assert result["ArtifactDigest"].startswith("blake2b-256:") and result["CreationTime"].startswith("20")
    # Per-job facts are in the result, not in the package (equal builds, equal digests).
    assert "CompilationJobName" not in meta_of(tmp_path / "o" / "model-ml_c4.tar.gz")["Compilation"]


def test_file_uris_work_for_input_and_output(example, tmp_path):
    proc = cli(*compile_args(example.as_uri(), (tmp_path / "o").as_uri()))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (tmp_path / "o" / "model-ml_c4.tar.gz").as_uri()


def test_s3_round_trip_against_a_real_server(example, s3_server, tmp_path):
    client = s3_server.client()
    client.create_bucket(Bucket="neo-cli")
    client.upload_file(str(example), "neo-cli", "models/resnet.tar.gz")
    env = dict(s3_server.env, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    proc = cli(*compile_args("s3://neo-cli/models/resnet.tar.gz", "s3://neo-cli/compiled", target="ml_m4"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "s3://neo-cli/compiled/resnet-ml_m4.tar.gz"
    client.download_file("neo-cli", "compiled/resnet-ml_m4.tar.gz", str(tmp_path / "p.tar.gz"))
    from neocompile.runtime import Model

    model = Model(tmp_path / "p.tar.gz")
    (out,) = model.run(np.zeros((1, 3, 32, 32), np.float32))
    assert out.shape == (1, 10) and abs(float(out.sum()) - 1.0) < 1e-5  # softmax


# --- bad input: one clear error line, exit status 1, nothing written -----------------------------------------------

def _bad_archives(tmp: Path) -> dict[str, Path]:
    good = modelzoo.small_cnn(size=32).SerializeToString()
    notgz = tmp / "notgz.tar.gz"
    notgz.write_text("hello")
    link = tarfile.TarInfo("model.onnx")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    bomb = tmp / "bomb.tar.gz"
    modelzoo.write_archive(bomb, {"model.onnx": good})
    return {
        "notgz": notgz,
        "plaintar": tar_with(tmp / "plain.tar.gz", [tarfile.TarInfo("model.onnx")], {"model.onnx": good}, mode="w"),
        "traversal": tar_with(tmp / "trav.tar.gz", [tarfile.TarInfo("../model.onnx")], {"../model.onnx": good}),
        "link": tar_with(tmp / "link.tar.gz", [link]),
        "bomb": bomb,
        "nomodel": modelzoo.write_archive(tmp / "none.tar.gz", {"README.md": b"no model here", ".hidden.onnx": good}),
        "twomodels": modelzoo.write_archive(tmp / "two.tar.gz", {"a.onnx": good, "b/b.onnx": good}),
        "good": modelzoo.write_archive(tmp / "good.tar.gz", {"model.onnx": good}),
    }


BAD_CASES = [
    ("notgz", {}, "Unable to untar input model. Please confirm the model is a tar.gz file. InputConfig.S3Uri: 'notgz.tar.gz' is not gzip-compressed"),
    ("plaintar", {}, "is not gzip-compressed; expected a .tar.gz archive"),
    ("traversal", {}, "Archive member '../model.onnx' contains '..'"),
    ("link", {}, "links to '/etc/passwd', outside the archive"),
    ("bomb", {"env": {"NEOCOMPILE_MAX_UNPACKED_BYTES": "1000"}}, "unpacks to more than 1000 bytes"),
    ("nomodel", {}, "InputConfiguration: Exactly one .onnx file is allowed for ONNX models. Found 0: none"),
    ("twomodels", {}, "Exactly one .onnx file is allowed for ONNX models. Found 2: a.onnx, b/b.onnx"),
    ("good", {"framework": "CAFFE"}, "InputConfig.Framework: 'CAFFE' is not a valid framework; expected one of TENSORFLOW"),
    ("good", {"target": "ml_c99"}, "OutputConfig.TargetDevice: 'ml_c99' is not a supported target device"),
    ("good", {"config": '{"data": [1,3,32'}, "InputConfiguration: Cannot load DataInputConfig. Incorrect json format."),
    ("good", {"config": '{"image": [1,3,32,32]}'}, "names input(s) 'image' that the ONNX model does not have. Model inputs: data[N,3,32,32]"),
    ("good", {"config": '{"data": [1,32,32]}'}, "Input data has wrong shape in Input Shape dictionary: got [1, 32, 32] (rank 3)"),
    ("good", {"config": '{"data": [1,3,0,32]}'}, "input 'data' has dimension 2 = 0"),
]


@pytest.mark.parametrize("case,kw,expected", BAD_CASES, ids=[f"{c}-{'-'.join(k) or 'archive'}" for c, k, _ in BAD_CASES])
def test_bad_input_gets_one_clear_line_and_leaves_nothing(tmp_path, case, kw, expected):
    archive = _bad_archives(tmp_path)[case]
    out = tmp_path / "out"
    proc = cli(*compile_args(archive, out, target=kw.get("target", "ml_c4"), config=kw.get("config", SMALL_CONFIG),
                             framework=kw.get("framework", "ONNX")), env=kw.get("env"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("compile-model: error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert expected in errors[0], errors[0]
    assert not out.exists() or not any(out.iterdir())
    assert proc.stdout == ""


def test_missing_s3_object_is_named(s3_server, tmp_path):
    s3_server.client().create_bucket(Bucket="neo-missing")
    env = dict(s3_server.env, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    proc = cli(*compile_args("s3://neo-missing/nope/model.tar.gz", tmp_path / "out"), env=env)
    assert proc.returncode == 1
    assert "compile-model: error: ClientError: InputConfiguration: S3 object does not exist. Bucket: neo-missing, Key: nope/model.tar.gz" in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unwritable_output_fails_before_compiling(example, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    proc = cli(*compile_args(example, blocker / "out"))
    assert proc.returncode == 1
    (line,) = [l for l in proc.stderr.splitlines() if "error:" in l]
    assert "OutputConfig.S3OutputLocation" in line and str(blocker / "out") in line
    assert "[compile" not in proc.stderr  # pre-flight: no minutes spent compiling first


def test_missing_required_flags_are_a_malformed_command_line(tmp_path):
    proc = cli("--framework", "ONNX")
    assert proc.returncode == 2, proc.stderr
    assert "missing required argument(s): --model-uri, --output-location, --target-device or --target-platform" in proc.stderr


def test_targets_command_prints_the_registry():
    proc = cli("targets", tool="neocompile")
    assert proc.returncode == 0
    for name in ("rasp3b", "rk3288", "jetson_nano", "ml_c5", "sbe_c", "deeplens"):
        assert name in proc.stdout
    # Each device's reference OS and its glibc floor are shown.
    rasp3b = next(line for line in proc.stdout.splitlines() if line.startswith("rasp3b "))
    assert "2.28" in rasp3b and "Raspberry Pi OS 10 (Buster)" in rasp3b


def test_neocompile_run_executes_an_arm_package_under_qemu(example, tmp_path):
    assert cli(*compile_args(example, tmp_path, target="rk3399")).returncode == 0
    proc = cli("run", str(tmp_path / "model-rk3399.tar.gz"), "--repeat", "2", tool="neocompile")
    assert proc.returncode == 0, proc.stderr
    assert "prob: shape [1, 10] float32" in proc.stdout and "under qemu-aarch64" in proc.stdout


# --- every failure told straight: exit statuses, JSON errors, closed pipes, library output ---------------------------

@pytest.fixture(scope="module")
def runnable_package(example, tmp_path_factory) -> Path:
    """A package this x86 machine runs (ml_c4: AVX2, no AVX-512)."""
    out = tmp_path_factory.mktemp("runnable")
    proc = cli(*compile_args(example, out, target="ml_c4"))
    assert proc.returncode == 0, proc.stderr
    return out / "model-ml_c4.tar.gz"


def test_target_device_with_target_platform_is_a_malformed_command_line(example, tmp_path):
    proc = cli(*compile_args(example, tmp_path), "--target-platform", "Os=LINUX,Arch=ARM64")
    assert proc.returncode == 2, proc.stderr
    assert "compile-model: error: argument --target-platform: not allowed with argument --target-device" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_a_device_from_cli_input_json_and_a_platform_flag_conflict_like_in_aws(example, tmp_path):
    body = {"InputConfig": {"S3Uri": str(example), "Framework": "ONNX", "DataInputConfig": SMALL_CONFIG},
            "OutputConfig": {"S3OutputLocation": str(tmp_path / "o"), "TargetDevice": "ml_c4"}}
    proc = cli("--cli-input-json", json.dumps(body), "--target-platform", "Os=LINUX,Arch=ARM64", "--json")
    assert proc.returncode == 1, proc.stderr
    error = json.loads(proc.stdout)["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"].startswith("OutputConfig: TargetDevice and TargetPlatform are mutually exclusive; "
                                       "--cli-input-json gives TargetDevice and --target-platform the other")
    assert not (tmp_path / "o").exists()


def test_json_failure_prints_an_aws_style_error_object(tmp_path):
    proc = cli(*compile_args(tmp_path / "model.tar.gz", tmp_path / "o", framework="CAFFE"), "--json")
    assert proc.returncode == 1
    error = json.loads(proc.stdout)
    assert error["ExitStatus"] == 1 and error["Error"]["Code"] == "ValidationException" and error["Error"]["Type"] == "Sender"
    assert "InputConfig.Framework: 'CAFFE' is not a valid framework" in error["Error"]["Message"]
    # The one error line on stderr stays.
    assert "compile-model: error: ClientError: InputConfig.Framework: 'CAFFE'" in proc.stderr
    usage = cli("--framework", "ONNX", "--json")
    assert usage.returncode == 2 and json.loads(usage.stdout)["ExitStatus"] == 2


def test_cli_input_json_given_a_file_name_suggests_file_uri(tmp_path):
    proc = cli("--cli-input-json", "request.json")
    assert proc.returncode == 1
    assert "'request.json' is not valid JSON" in proc.stderr and "to read a file give file://request.json" in proc.stderr


def test_library_output_never_interleaves_with_the_progress_lines(example, tmp_path):
    # LLVM writes this warning itself to fd 2, once per compiled function.
    proc = cli(*compile_args(example, tmp_path, target="ml_c4"), "--compiler-options", "{'mattr': ['+nosuchfeature']}")
    assert proc.returncode == 0, proc.stderr
    progress = re.compile(r"^\[(fetch  |extract|load   |compile|verify |package|upload )\] (ok|\.\.\.) |^compiled in ")
    strays = [line for line in proc.stderr.splitlines() if not progress.match(line)]
    assert strays == [], proc.stderr
    assert "[compile] ...    library output: '+nosuchfeature' is not a recognized feature" in proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "model-ml_c4.tar.gz")


def test_a_closed_stdout_pipe_exits_quietly_like_unix_tools():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone, as when `head -1` has read its line and exited
    try:
        proc = subprocess.run([str(BIN / "neocompile"), "targets", "--json"], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == ""


def test_run_names_a_missing_package(tmp_path):
    proc = cli("run", str(tmp_path / "nope.tar.gz"), tool="neocompile")
    assert proc.returncode == 1
    assert f"'{tmp_path / 'nope.tar.gz'}' does not exist" in proc.stderr


def test_run_says_a_source_archive_must_be_compiled_first(example):
    proc = cli("run", str(example), tool="neocompile")
    assert proc.returncode == 1
    (line,) = [l for l in proc.stderr.splitlines() if "error:" in l]
    assert f"'{example}' is not a neocompile package" in line and "looks like a model source archive (model.onnx)" in line
    assert "compile it first" in line and "neocompile-model-" not in line


def test_run_input_file_mistakes_are_the_users_not_internal(runnable_package, tmp_path):
    proc = cli("run", str(runnable_package), "--input", f"data={tmp_path / 'missing.npy'}", tool="neocompile")
    assert proc.returncode == 1, proc.stderr
    assert f"cannot read '{tmp_path / 'missing.npy'}': No such file or directory" in proc.stderr
    assert "internal error" not in proc.stderr


def test_run_repeat_below_one_is_a_malformed_command_line(runnable_package):
    proc = cli("run", str(runnable_package), "--repeat", "0", tool="neocompile")
    assert proc.returncode == 2 and "argument --repeat: '0' is not valid; expected an integer >= 1" in proc.stderr


def test_run_takes_file_and_s3_uris(runnable_package, s3_server):
    client = s3_server.client()
    client.create_bucket(Bucket="neo-run")
    client.upload_file(str(runnable_package), "neo-run", "compiled/model-ml_c4.tar.gz")
    env = dict(s3_server.env, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    for uri in (runnable_package.as_uri(), "s3://neo-run/compiled/model-ml_c4.tar.gz"):
        proc = cli("run", uri, "--repeat", "1", tool="neocompile", env=env)
        assert proc.returncode == 0, proc.stderr
        assert "prob: shape [1, 10] float32" in proc.stdout
