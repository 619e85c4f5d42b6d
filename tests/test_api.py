"""The Python API: compile_model, the deadline, and the runtime Model."""
from __future__ import annotations

import time

import numpy as np
import pytest

import neocompile
from neocompile import modelzoo
from neocompile.errors import JobTimeout, PackageError, VerificationError
from neocompile.runtime import Model
from tests.models import SMALL_CONFIG, small_onnx_archive


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    events = []
    result = neocompile.compile_model(
        model_uri=str(small_onnx_archive(tmp)), framework="onnx", output_location=str(tmp / "out"),
        data_input_config={"data": [1, 3, 32, 32]}, target_device="ml_c4", job_name="api-job", progress=events.append,
    )
    return result, events


def test_compile_model_returns_artifact_digest_and_timings(compiled):
    result, events = compiled
    assert result.job_name == "api-job" and result.artifact_uri.endswith("out/model-ml_c4.tar.gz")
    assert result.artifact_digest.startswith("blake2b-256:") and len(result.artifact_digest) == len("blake2b-256:") + 64
    assert list(result.timings) == ["fetch", "extract", "load", "compile", "verify", "package", "upload"]
    assert [e.stage for e in events if e.status == "done"] == list(result.timings)
    assert result.derived_data_input_config == {"data": [1, 3, 32, 32]}


def test_model_exposes_dlr_style_signature(compiled):
    model = Model(compiled[0].artifact_uri)
    assert model.input_names == ["data"] and model.input_shapes == {"data": [1, 3, 32, 32]}
    assert model.output_names == ["prob"] and model.get_output_names() == ["prob"]


def test_model_runs_dict_list_and_single_array_alike(compiled):
    model = Model(compiled[0].artifact_uri)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    a, b, c = model.run({"data": x}), model.run([x]), model.run(x)
    assert a[0].shape == (1, 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[0], c[0])


def test_model_refuses_wrong_input_shape_and_names(compiled):
    model = Model(compiled[0].artifact_uri)
    with pytest.raises(PackageError, match=r"Input 'data' has shape \[1, 3, 16, 16\]; the model was compiled for \[1, 3, 32, 32\]"):
        model.run(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(PackageError, match=r"missing \['data'\], unexpected \['image'\]"):
        model.run({"image": np.zeros((1, 3, 32, 32), np.float32)})


def test_model_refuses_a_device_type_mismatch_like_dlr(compiled):
    with pytest.raises(PackageError, match='requires device type "cpu" but user gave "gpu"'):
        Model(compiled[0].artifact_uri, dev_type="gpu")


def test_model_refuses_a_package_for_another_architecture(tmp_path):
    result = neocompile.compile_model(str(small_onnx_archive(tmp_path)), "ONNX", str(tmp_path / "o"), SMALL_CONFIG,
                                      target_device="rk3399", compiler_options={"verify": False})
    assert result.verification == {"status": "skipped", "reason": "disabled by CompilerOptions verify=false"}
    with pytest.raises(PackageError, match="is for aarch64 .*but this machine is x86_64.*emulate=True"):
        Model(result.artifact_uri)


def test_a_foreign_package_runs_under_qemu_with_emulate_and_agrees_with_the_host_build(compiled, tmp_path):
    result = neocompile.compile_model(str(small_onnx_archive(tmp_path)), "ONNX", str(tmp_path / "o"), SMALL_CONFIG,
                                      target_device="rasp3b")
    foreign, host = Model(result.artifact_uri, emulate=True), Model(compiled[0].artifact_uri)
    assert foreign.emulated_target.name == "rasp3b" and foreign.input_names == host.input_names
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(foreign.run(x)[0], host.run(x)[0], rtol=1e-4, atol=1e-6)


def test_zero_tolerance_verification_fails_the_job_with_numbers(tmp_path):
    with pytest.raises(VerificationError, match=r"beyond tolerance \(max\|diff\| <= atol 0.0 \+ rtol 0.0.*prob: max abs [0-9.e-]+, max rel"):
        neocompile.compile_model(str(small_onnx_archive(tmp_path)), "ONNX", str(tmp_path / "o"), SMALL_CONFIG,
                                 target_device="ml_c4", compiler_options={"verify-atol": 0, "verify-rtol": 0})
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_deadline_stops_the_compile_and_leaves_nothing(tmp_path):
    archive = modelzoo.onnx_archive(tmp_path / "big.tar.gz", modelzoo.resnet(depth=26, size=112))
    start = time.monotonic()
    with pytest.raises(JobTimeout, match=r"exceeded StoppingCondition.MaxRuntimeInSeconds \(3 s\) during the '\w+' stage"):
        neocompile.compile_model(str(archive), "ONNX", str(tmp_path / "o"), target_device="ml_c4", max_runtime_seconds=3)
    assert time.monotonic() - start < 3 + 15  # stopped, not waited out
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_job_within_its_deadline_returns_the_childs_result(tmp_path):
    result = neocompile.compile_model(str(small_onnx_archive(tmp_path)), "ONNX", str(tmp_path / "o"), SMALL_CONFIG,
                                      target_device="ml_c4", max_runtime_seconds=300)
    assert result.verification["status"] == "passed" and (tmp_path / "o" / "model-ml_c4.tar.gz").is_file()


def test_model_refuses_a_package_needing_cpu_features_this_machine_lacks(compiled, tmp_path):
    import json
    import tarfile

    with tarfile.open(compiled[0].artifact_uri) as tar:
        tar.extractall(tmp_path, filter="data")
    meta = json.loads((tmp_path / "compiled.meta").read_text())
    meta["Requirements"]["CpuFeatures"] = ["avx2", "no_such_flag"]
    (tmp_path / "compiled.meta").write_text(json.dumps(meta))
    with pytest.raises(PackageError, match="needs CPU features no_such_flag .*that this CPU lacks"):
        Model(tmp_path)


def test_the_same_input_compiles_to_a_byte_identical_library(compiled, tmp_path):
    # Neo users saw one job give different artifacts in two regions; here the library is reproducible.
    again = neocompile.compile_model(str(small_onnx_archive(tmp_path)), "ONNX", str(tmp_path / "o"),
                                     {"data": [1, 3, 32, 32]}, target_device="ml_c4")
    first = compiled[0].meta["Files"]
    assert again.meta["Files"]["compiled.so"] == first["compiled.so"]
    assert again.meta["Files"]["lib/libtvm_runtime.so"] == first["lib/libtvm_runtime.so"]


@pytest.fixture(scope="module")
def built_twice(tmp_path_factory):
    """The same archive compiled twice for ml_c4 (runs on any AVX2 x86 CPU, verified natively) under two job names."""
    tmp = tmp_path_factory.mktemp("twice")
    archive = small_onnx_archive(tmp)
    return [neocompile.compile_model(str(archive), "ONNX", str(tmp / name), SMALL_CONFIG, target_device="ml_c4", job_name=name)
            for name in ("first-job", "second-job")]


def test_two_identical_builds_are_the_same_package_with_the_same_digest(built_twice):
    first, second = built_twice
    assert first.artifact_digest == second.artifact_digest
    assert first.verification["status"] == "passed" and "seconds" in first.verification
    # The per-job facts stay in the result, out of the package bytes.
    assert (first.job_name, second.job_name) == ("first-job", "second-job") and first.created_time.startswith("20")
    assert "CompilationJobName" not in first.meta["Compilation"] and "CreatedTime" not in first.meta["Compilation"]


def test_model_takes_file_uris_and_the_s3_uri_a_job_returns(built_twice, s3_env, tmp_path):
    from pathlib import Path

    assert Model(Path(built_twice[0].artifact_uri).as_uri()).input_names == ["data"]
    result = neocompile.compile_model(str(small_onnx_archive(tmp_path)), "ONNX", f"s3://{s3_env}/compiled", SMALL_CONFIG,
                                      target_device="ml_c4", compiler_options={"verify": False})
    assert result.artifact_uri == f"s3://{s3_env}/compiled/model-ml_c4.tar.gz"
    (out,) = Model(result.artifact_uri).run(np.zeros((1, 3, 32, 32), np.float32))
    assert out.shape == (1, 10)
    with pytest.raises(PackageError, match=f"S3 object does not exist. Bucket: {s3_env}, Key: compiled/nope.tar.gz"):
        Model(f"s3://{s3_env}/compiled/nope.tar.gz")


def test_model_says_a_missing_path_does_not_exist(tmp_path):
    with pytest.raises(PackageError, match=f"'{tmp_path / 'nope.tar.gz'}' does not exist; expected a package .tar.gz"):
        Model(tmp_path / "nope.tar.gz")
    with pytest.raises(PackageError, match="does not exist"):
        Model((tmp_path / "nope").as_uri())


def test_model_says_a_source_archive_must_be_compiled_first(tmp_path):
    archive = small_onnx_archive(tmp_path)
    with pytest.raises(PackageError, match=rf"'{archive}' is not a neocompile package \(it has no compiled.meta\) but looks "
                                           r"like a model source archive \(model.onnx\); compile it first: compile-model --framework ONNX"):
        Model(str(archive))
