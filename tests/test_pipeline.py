"""Request validation before any download: the pre-flight every door goes through."""
import pytest

from neocompile.errors import InputConfigurationError, TargetError, ValidationError
from neocompile.pipeline import CompilationRequest, plan


def req(**kw):
    base = dict(model_uri="s3://b/models/model.tar.gz", framework="ONNX", output_location="s3://b/out",
                data_input_config='{"data":[1,3,224,224]}', target_device="ml_c5")
    base.update(kw)
    return CompilationRequest(**base)


def test_a_good_request_is_resolved_without_io():
    p = plan(req(compiler_options="{'mcpu': 'skylake'}", job_name="job-1", framework_version="1.13"))
    assert p.artifact_name == "model-ml_c5.tar.gz" and p.target.name == "ml_c5"
    assert p.options == {"mcpu": "skylake"} and p.shapes == {"data": (1, 3, 224, 224)}


def test_target_device_and_platform_are_mutually_exclusive():
    with pytest.raises(ValidationError, match="TargetDevice and TargetPlatform are mutually exclusive"):
        plan(req(target_platform={"Os": "LINUX", "Arch": "ARM64"}))
    with pytest.raises(ValidationError, match="one of TargetDevice or TargetPlatform is required"):
        plan(req(target_device=None))


def test_nvidia_platform_requires_the_gpu_options():
    with pytest.raises(ValidationError, match="Accelerator NVIDIA requires gpu-code, trt-ver, cuda-ver"):
        plan(req(target_device=None, target_platform={"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"}))
    p = plan(req(target_device=None, target_platform={"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
                 compiler_options="{'gpu-code': 'sm_72', 'trt-ver': '8.2.1', 'cuda-ver': '10.2'}"))
    assert p.artifact_name == "model-LINUX_ARM64_NVIDIA.tar.gz" and p.target.target_dict(p.options)["arch"] == "sm_72"


@pytest.mark.parametrize("name", ["has_underscore", "-leading", "a" * 64, "dots.in.name"])
def test_bad_job_names_are_refused_with_the_pattern(name):
    with pytest.raises(ValidationError, match=r"CompilationJobName: .* is not valid; expected 1-63 letters"):
        plan(req(job_name=name))


@pytest.mark.parametrize("version", ["1", "one.two", "1.2.3.4.5.6"])
def test_bad_framework_versions_are_refused(version):
    with pytest.raises(ValidationError, match="InputConfig.FrameworkVersion"):
        plan(req(framework_version=version))


@pytest.mark.parametrize("seconds", [0, -5, 1.5, True])
def test_bad_max_runtime_is_refused(seconds):
    with pytest.raises(ValidationError, match="StoppingCondition.MaxRuntimeInSeconds"):
        plan(req(max_runtime_seconds=seconds))


def test_unknown_target_and_bad_shapes_fail_before_any_download():
    with pytest.raises(TargetError):
        plan(req(target_device="ml_q9"))
    with pytest.raises(InputConfigurationError, match="Incorrect json format"):
        plan(req(data_input_config="{data: [1,3"))


def test_from_api_reads_a_create_compilation_job_body():
    r = CompilationRequest.from_api({
        "CompilationJobName": "j1", "RoleArn": "arn:aws:iam::123456789012:role/x",
        "InputConfig": {"S3Uri": "s3://b/m.tar.gz", "Framework": "PYTORCH", "DataInputConfig": "[[1,3,8,8]]", "FrameworkVersion": "2.0"},
        "OutputConfig": {"S3OutputLocation": "s3://b/o", "TargetPlatform": {"Os": "LINUX", "Arch": "ARM_EABIHF"}, "CompilerOptions": "{'mattr': ['+neon']}"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    })
    assert (r.job_name, r.framework, r.max_runtime_seconds, r.target_platform["Arch"]) == ("j1", "PYTORCH", 900, "ARM_EABIHF")
    assert plan(r).artifact_name == "m-LINUX_ARM_EABIHF.tar.gz"


@pytest.mark.parametrize("body,match", [
    ({"OutputConfig": {"S3OutputLocation": "s3://b/o"}}, "InputConfig: missing"),
    ({"InputConfig": {"S3Uri": "s3://b/m.tar.gz", "Framework": "ONNX"}}, "OutputConfig: missing"),
    ({"InputConfig": {"S3Uri": "s3://b/m.tar.gz"}, "OutputConfig": {"S3OutputLocation": "s3://b/o"}}, "InputConfig.Framework: missing"),
    ({"InputConfig": {}, "OutputConfig": {}, "Bogus": 1}, r"unknown field\(s\) \['Bogus'\]"),
    ({"ModelPackageVersionArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/x/1"}, "model packages are not supported"),
])
def test_from_api_names_what_is_wrong(body, match):
    with pytest.raises(ValidationError, match=match):
        CompilationRequest.from_api(body)
