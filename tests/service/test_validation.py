"""Request validation against botocore's real SageMaker model: every rule kind, Coral wording, normalization."""
from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime

import botocore.model
import botocore.serialize
import pytest

from neocompile.service.validation import (
    CROSS_FIELD_RULES,
    RequestValidationError,
    UnknownOperation,
    _compiled,
    _scalar,
    service_model,
    validate,
)

ROLE = "arn:aws:iam::123456789012:role/NeoRole"
PACKAGE = "arn:aws:sagemaker:us-west-2:123456789012:model-package/my-models/3"
FULL_DEVICE_JOB = {
    "CompilationJobName": "resnet50-c5",
    "RoleArn": ROLE,
    "InputConfig": {
        "S3Uri": "s3://bucket/models/resnet50.tar.gz",
        "DataInputConfig": '{"input0": [1, 3, 224, 224]}',
        "Framework": "PYTORCH",
        "FrameworkVersion": "2.0",
    },
    "OutputConfig": {
        "S3OutputLocation": "s3://bucket/compiled/",
        "TargetDevice": "ml_c5",
        "CompilerOptions": '{"dtype": "float32"}',
        "KmsKeyId": "arn:aws:kms:us-west-2:123456789012:key/abcd-1234",
    },
    "VpcConfig": {"SecurityGroupIds": ["sg-0123"], "Subnets": ["subnet-0123", "subnet-4567"]},
    "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    "Tags": [{"Key": "team", "Value": "vision"}, {"Key": "cost:center", "Value": ""}],
}
PLATFORM_JOB = {
    "CompilationJobName": "from-package",
    "RoleArn": ROLE,
    "ModelPackageVersionArn": PACKAGE,
    "OutputConfig": {
        "S3OutputLocation": "s3://bucket/out",
        "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
    },
    "StoppingCondition": {},
}
TRANSFORM_JOB = {
    "TransformJobName": "batch-1",
    "ModelName": "model-1",
    "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/in/"}}},
    "TransformOutput": {"S3OutputPath": "s3://bucket/out/"},
    "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
}
NAME_PATTERN = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"


def job(**changes) -> dict:
    """FULL_DEVICE_JOB with top-level members replaced (None removes one)."""
    body = copy.deepcopy(FULL_DEVICE_JOB)
    for name, value in changes.items():
        if value is None:
            body.pop(name)
        else:
            body[name] = value
    return body


def errors(operation: str, body: object) -> list[str]:
    with pytest.raises(RequestValidationError) as caught:
        validate(operation, body)
    assert caught.value.code == "ValidationException"
    return caught.value.messages


def only_error(operation: str, body: object) -> str:
    [message] = errors(operation, body)
    return message


# --- valid bodies ---------------------------------------------------------------------------------------------

def test_full_target_device_job_is_accepted_unchanged():
    assert validate("CreateCompilationJob", copy.deepcopy(FULL_DEVICE_JOB)) == FULL_DEVICE_JOB


def test_target_platform_job_from_a_model_package_is_accepted():
    assert validate("CreateCompilationJob", copy.deepcopy(PLATFORM_JOB)) == PLATFORM_JOB


def test_simple_operations_accept_their_bodies():
    assert validate("DescribeCompilationJob", {"CompilationJobName": "a"}) == {"CompilationJobName": "a"}
    assert validate("ListCompilationJobs", {}) == {}
    tags = {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:compilation-job/a", "Tags": []}
    assert validate("AddTags", tags) == tags


def test_tag_keys_and_values_with_unicode_letters_spaces_and_digits_are_accepted():
    tags = [{"Key": "Ünïcödé 名前 ٣", "Value": "Привет мир @ a/b=c+d:e.f_g-h"}]
    body = {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:compilation-job/a", "Tags": tags}
    assert validate("AddTags", body)["Tags"] == tags


def test_null_members_count_as_absent_and_are_dropped():
    assert validate("ListCompilationJobs", {"MaxResults": None, "NameContains": "x"}) == {"NameContains": "x"}
    assert only_error("DescribeCompilationJob", {"CompilationJobName": None}) == (
        "Value null at 'compilationJobName' failed to satisfy constraint: Member must not be null")


# --- required ---------------------------------------------------------------------------------------------------

def test_missing_required_member_is_reported_as_null():
    assert only_error("CreateCompilationJob", job(OutputConfig=None)) == (
        "Value null at 'outputConfig' failed to satisfy constraint: Member must not be null")


def test_missing_required_nested_members_are_reported_with_their_dotted_paths():
    body = job(InputConfig={"DataInputConfig": "{}"}, Tags=[{"Key": "k"}])
    assert errors("CreateCompilationJob", body) == [
        "Value null at 'inputConfig.s3Uri' failed to satisfy constraint: Member must not be null",
        "Value null at 'inputConfig.framework' failed to satisfy constraint: Member must not be null",
        "Value null at 'tags.1.member.value' failed to satisfy constraint: Member must not be null",
    ]


def test_null_list_item_is_reported():
    assert only_error("CreateCompilationJob", job(Tags=[{"Key": "k", "Value": "v"}, None])) == (
        "Value null at 'tags.2.member' failed to satisfy constraint: Member must not be null")


# --- types ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, shown", [("12", "12"), (True, "true"), (3.0, "3.0"), (2**31, str(2**31))])
def test_max_results_must_be_a_json_integer(value, shown):
    assert only_error("ListCompilationJobs", {"MaxResults": value}) == (
        f"Value '{shown}' at 'maxResults' failed to satisfy constraint: Member must be of type integer")


def test_wrong_container_and_string_types_are_reported():
    body = job(OutputConfig="s3://bucket/out", Tags={"Key": "k"}, CompilationJobName=7)
    assert errors("CreateCompilationJob", body) == [
        "Value '7' at 'compilationJobName' failed to satisfy constraint: Member must be of type string",
        ("Value 's3://bucket/out' at 'outputConfig' failed to satisfy constraint: "
         "Member must be of type structure (a JSON object)"),
        "Value '{\"Key\": \"k\"}' at 'tags' failed to satisfy constraint: Member must be of type list (a JSON array)",
    ]


@pytest.mark.parametrize("value", [True, "yesterday", "2024-13-01", [1], float("inf"), float("nan"), 1e20])
def test_timestamps_must_be_epoch_numbers_or_iso_strings(value):
    message = only_error("ListCompilationJobs", {"CreationTimeAfter": value})
    assert message.endswith("at 'creationTimeAfter' failed to satisfy constraint: "
                            "Member must be of type timestamp (epoch seconds or an ISO-8601 string)")


def test_body_must_be_a_json_object():
    for body, kind in ([], "an array"), ("{}", "a string"), (None, "null"):
        assert errors("ListCompilationJobs", body) == [f"The request body must be a JSON object, not {kind}"]


# --- lengths, patterns, enums, ranges ---------------------------------------------------------------------------

def test_string_length_limits():
    assert errors("DescribeCompilationJob", {"CompilationJobName": ""}) == [  # every broken constraint counts
        ("Value '' at 'compilationJobName' failed to satisfy constraint: "
         "Member must have length greater than or equal to 1"),
        ("Value '' at 'compilationJobName' failed to satisfy constraint: "
         f"Member must satisfy regular expression pattern: {NAME_PATTERN}"),
    ]
    too_long = "a" * 64  # also breaks the pattern, which allows 63 characters at most
    assert errors("DescribeCompilationJob", {"CompilationJobName": too_long}) == [
        (f"Value '{too_long}' at 'compilationJobName' failed to satisfy constraint: "
         "Member must have length less than or equal to 63"),
        (f"Value '{too_long}' at 'compilationJobName' failed to satisfy constraint: "
         f"Member must satisfy regular expression pattern: {NAME_PATTERN}"),
    ]


def test_pattern_message_matches_aws():
    assert str(validate_error("DescribeCompilationJob", {"CompilationJobName": "bad_name!"})) == (
        "1 validation error detected: Value 'bad_name!' at 'compilationJobName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {NAME_PATTERN}")


@pytest.mark.parametrize("name", ["job-ok_tail", "job-", "-job", "job.1"])
def test_pattern_must_match_the_whole_value(name):
    assert only_error("DescribeCompilationJob", {"CompilationJobName": name}).endswith(
        f"Member must satisfy regular expression pattern: {NAME_PATTERN}")


def test_patterns_use_java_ascii_classes():
    arabic_digits_role = "arn:aws:iam::" + "١٢٣٤٥٦٧٨٩٠١٢" + ":role/Neo"  # \d is [0-9] in Java
    assert only_error("CreateCompilationJob", job(RoleArn=arabic_digits_role)).endswith(
        r"pattern: ^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")


def test_tag_key_with_disallowed_characters_is_rejected():
    body = {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:compilation-job/a",
            "Tags": [{"Key": "ok", "Value": "v"}, {"Key": "{bad}", "Value": "v"}]}
    assert only_error("AddTags", body) == (
        "Value '{bad}' at 'tags.2.member.key' failed to satisfy constraint: "
        r"Member must satisfy regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)")


def test_enum_values():
    assert only_error("CreateCompilationJob", job(OutputConfig={"S3OutputLocation": "s3://b/o", "TargetDevice": "nope"})
                      ).startswith("Value 'nope' at 'outputConfig.targetDevice' failed to satisfy constraint: "
                                   "Member must satisfy enum value set: [lambda, ml_m4, ml_m5, ")
    assert only_error("ListCompilationJobs", {"StatusEquals": "InProgress"}) == (
        "Value 'InProgress' at 'statusEquals' failed to satisfy constraint: "
        "Member must satisfy enum value set: [INPROGRESS, COMPLETED, FAILED, STARTING, STOPPING, STOPPED]")


@pytest.mark.parametrize("value, phrase", [(0, "greater than or equal to 1"), (101, "less than or equal to 100")])
def test_max_results_range(value, phrase):
    assert only_error("ListCompilationJobs", {"MaxResults": value}) == (
        f"Value '{value}' at 'maxResults' failed to satisfy constraint: Member must have value {phrase}")


def test_list_length_limits():
    tags = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    assert only_error("CreateCompilationJob", job(Tags=tags)).endswith(
        "at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50")
    assert only_error("CreateCompilationJob", job(VpcConfig={"SecurityGroupIds": [], "Subnets": ["s"]})) == (
        "Value '[]' at 'vpcConfig.securityGroupIds' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1")


def test_map_length_keys_and_values():
    environment = {f"VAR_{i}": "x" for i in range(17)}
    assert only_error("CreateTransformJob", {**TRANSFORM_JOB, "Environment": environment}).endswith(
        "at 'environment' failed to satisfy constraint: Member must have length less than or equal to 16")
    environment = {"1BAD": "x", "GOOD": "y" * 10241, "NONE": None}
    assert errors("CreateTransformJob", {**TRANSFORM_JOB, "Environment": environment}) == [
        ("Value '1BAD' at 'environment' failed to satisfy constraint: Map keys must satisfy constraint: "
         "[Member must satisfy regular expression pattern: ^[a-zA-Z_][a-zA-Z0-9_]{0,1023}]"),
        (f"Value '{'y' * 97}...' at 'environment.GOOD' failed to satisfy constraint: "
         "Member must have length less than or equal to 10240"),
        "Value null at 'environment.NONE' failed to satisfy constraint: Member must not be null",
    ]
    assert validate("CreateTransformJob", {**TRANSFORM_JOB, "Environment": {"A": "1"}})["Environment"] == {"A": "1"}


def test_union_needs_exactly_one_member():
    union_errors = [m for m in errors("CreateAutoMLJobV2", {"AutoMLProblemTypeConfig": {}})
                    if m.startswith("Value '{}' at 'autoMLProblemTypeConfig'")]
    assert len(union_errors) == 1 and "Member must have exactly one member set, one of [" in union_errors[0]


def test_sensitive_values_are_not_echoed():
    messages = errors("CreateWorkforce", {"WorkforceName": "w", "OidcConfig": {"ClientSecret": "sécret"}})
    [secret] = [m for m in messages if "'oidcConfig.clientSecret'" in m]
    assert secret.startswith("Value '***' at") and "sécret" not in secret


def test_blob_is_base64_text_with_decoded_length_limits():
    # No SageMaker input has a blob, so the shape is built by hand.
    blob = botocore.model.Shape("Payload", {"type": "blob", "max": 2})
    assert _scalar(blob, "AAE=", None) == ("AAE=", [])
    assert _scalar(blob, "AAEC", None)[1] == ["Member must have length less than or equal to 2"]
    assert _scalar(blob, "not base64!", None)[1] == ["Member must be of type blob (base64 text)"]


# --- unknown members, counting, message size ----------------------------------------------------------------------

def test_unknown_members_are_named_with_the_known_ones():
    body = job(Foo=1)
    body["OutputConfig"]["TargetDev"] = "ml_c5"
    assert errors("CreateCompilationJob", body) == [
        ("Value 'ml_c5' at 'outputConfig.TargetDev' failed to satisfy constraint: Member is not defined in "
         "OutputConfig (its members: S3OutputLocation, TargetDevice, TargetPlatform, CompilerOptions, KmsKeyId)"),
        ("Value '1' at 'Foo' failed to satisfy constraint: Member is not defined in CreateCompilationJobRequest "
         "(its members: CompilationJobName, RoleArn, ModelPackageVersionArn, InputConfig, OutputConfig, VpcConfig, "
         "StoppingCondition, Tags)"),
    ]


def test_several_errors_are_counted_in_member_order():
    body = {"SortOrder": "Up", "MaxResults": 0}
    assert str(validate_error("ListCompilationJobs", body)) == (
        "2 validation errors detected: "
        "Value '0' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1; "
        "Value 'Up' at 'sortOrder' failed to satisfy constraint: Member must satisfy enum value set: "
        "[Ascending, Descending]")


def test_values_in_messages_are_capped():
    message = only_error("CreateCompilationJob", job(InputConfig={**FULL_DEVICE_JOB["InputConfig"],
                                                                  "DataInputConfig": "x" * 20000}))
    assert message.startswith(f"Value '{'x' * 97}...' at 'inputConfig.dataInputConfig'")
    assert len(message) < 250


# --- cross-field rules ------------------------------------------------------------------------------------------

def test_input_config_and_model_package_are_exclusive():
    assert str(validate_error("CreateCompilationJob", job(ModelPackageVersionArn=PACKAGE))) == (
        "1 validation error detected: Both InputConfig and ModelPackageVersionArn are specified; "
        "specify exactly one of them")
    assert only_error("CreateCompilationJob", job(InputConfig=None)) == (
        "Neither InputConfig nor ModelPackageVersionArn is specified; specify exactly one of them")


def test_target_device_and_target_platform_are_exclusive():
    both = job(OutputConfig={**FULL_DEVICE_JOB["OutputConfig"], "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}})
    assert only_error("CreateCompilationJob", both) == (
        "Both TargetDevice and TargetPlatform are specified in OutputConfig; specify exactly one of them")
    neither = job(OutputConfig={"S3OutputLocation": "s3://bucket/out"})
    assert only_error("CreateCompilationJob", neither) == (
        "Neither TargetDevice nor TargetPlatform is specified in OutputConfig; specify exactly one of them")


def test_cross_field_rules_are_counted_with_each_other():
    body = job(ModelPackageVersionArn=PACKAGE, OutputConfig={"S3OutputLocation": "s3://bucket/out"},
               StoppingCondition={"MaxRuntimeInSeconds": 2419201})
    assert str(validate_error("CreateCompilationJob", body)).startswith("3 validation errors detected: Both ")


def test_compilation_runtime_is_capped_at_28_days():
    assert validate("CreateCompilationJob", job(StoppingCondition={"MaxRuntimeInSeconds": 2419200}))
    assert only_error("CreateCompilationJob", job(StoppingCondition={"MaxRuntimeInSeconds": 2419201})) == (
        "Value '2419201' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: "
        "Member must have value less than or equal to 2419200")


def test_cross_field_rules_wait_for_a_body_that_fits_the_model():
    # Without OutputConfig the TargetDevice/TargetPlatform rule would add noise to the one real error.
    assert len(errors("CreateCompilationJob", job(OutputConfig=None, ModelPackageVersionArn=PACKAGE))) == 1
    assert set(CROSS_FIELD_RULES) >= {"CreateCompilationJob"}


@pytest.mark.parametrize("uri", ["http://x", "bucket/key", "file://relative/path", "file:///", "s3:/bucket"])
def test_compile_locations_must_be_s3_https_or_absolute_file_uris(uri):
    body = job(InputConfig={**FULL_DEVICE_JOB["InputConfig"], "S3Uri": uri},
               OutputConfig={**FULL_DEVICE_JOB["OutputConfig"], "S3OutputLocation": uri})
    assert [m.split(" failed")[0] for m in errors("CreateCompilationJob", body)] == [
        f"Value '{uri}' at 'inputConfig.s3Uri'", f"Value '{uri}' at 'outputConfig.s3OutputLocation'"]


@pytest.mark.parametrize("uri", ["s3://bucket", "s3://bucket/key.tar.gz", "https://host/path", "file:///abs/model.pt"])
def test_compile_locations_accept_s3_https_and_local_files(uri):
    body = job(InputConfig={**FULL_DEVICE_JOB["InputConfig"], "S3Uri": uri},
               OutputConfig={**FULL_DEVICE_JOB["OutputConfig"], "S3OutputLocation": uri})
    assert validate("CreateCompilationJob", body)["InputConfig"]["S3Uri"] == uri


def test_local_file_uris_only_where_workers_read_and_write_data():
    """file:// is accepted for the model, dataset and output locations a worker on the same machine (or a shared
    volume) reads and writes, and nowhere else."""
    body = {**TRANSFORM_JOB, "TransformOutput": {"S3OutputPath": "file:///tmp/out"}}
    assert validate("CreateTransformJob", body)["TransformOutput"]["S3OutputPath"] == "file:///tmp/out"
    capture = {"DestinationS3Uri": "file:///tmp/capture"}
    assert only_error("CreateTransformJob", {**TRANSFORM_JOB, "DataCaptureConfig": capture}).endswith(
        r"pattern: ^(https|s3)://([^/]+)/?(.*)")


# --- timestamps -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, epoch", [
    (1704110400.5, 1704110400.5),
    (1704110400, 1704110400.0),
    ("2024-01-01T12:00:00Z", 1704110400.0),
    ("2024-01-01T13:00:00.250+01:00", 1704110400.25),
    ("2024-01-01T12:00:00", 1704110400.0),  # no zone: UTC
])
def test_timestamps_become_float_epoch_seconds(value, epoch):
    normalized = validate("ListCompilationJobs", {"CreationTimeAfter": value, "LastModifiedTimeBefore": value})
    assert normalized == {"CreationTimeAfter": epoch, "LastModifiedTimeBefore": epoch}
    assert type(normalized["CreationTimeAfter"]) is float


# --- model coverage and boto3 agreement --------------------------------------------------------------------------

def test_unknown_operation_is_its_own_error():
    with pytest.raises(UnknownOperation) as caught:
        validate("CreateCompilationJobs", {})
    assert caught.value.operation == "CreateCompilationJobs" and caught.value.code == "UnknownOperationException"


def test_every_pattern_in_the_model_compiles():
    model = service_model()
    patterns = {model.shape_for(name).metadata.get("pattern") for name in model.shape_names} - {None}
    assert len(patterns) > 200
    for pattern in patterns:
        _compiled(pattern)
    # Java's surrogate pair (AthenaCatalog and friends) reads as one supplementary character.
    assert _compiled(model.shape_for("AthenaCatalog").metadata["pattern"]).fullmatch("cat😀\t")


@pytest.mark.parametrize("operation, params", [
    ("CreateCompilationJob", FULL_DEVICE_JOB),
    ("CreateCompilationJob", PLATFORM_JOB),
    ("ListCompilationJobs", {"CreationTimeAfter": datetime(2024, 1, 1, 12, tzinfo=UTC), "MaxResults": 5,
                             "SortBy": "CreationTime", "SortOrder": "Descending", "StatusEquals": "COMPLETED"}),
    ("AddTags", {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:compilation-job/a",
                 "Tags": [{"Key": "k", "Value": "v"}]}),
])
def test_bodies_from_botocores_serializer_validate(operation, params):
    operation_model = service_model().operation_model(operation)
    request = botocore.serialize.create_serializer("json").serialize_to_request(params, operation_model)
    body = json.loads(request["body"])
    normalized = validate(operation, body)
    if operation == "ListCompilationJobs":
        assert normalized["CreationTimeAfter"] == 1704110400.0
    else:
        assert normalized == params


def test_validation_is_fast_once_loaded():
    validate("CreateCompilationJob", copy.deepcopy(FULL_DEVICE_JOB))
    start = time.perf_counter()
    for _ in range(100):
        validate("CreateCompilationJob", FULL_DEVICE_JOB)
    assert (time.perf_counter() - start) / 100 < 0.005


def validate_error(operation: str, body: object) -> RequestValidationError:
    with pytest.raises(RequestValidationError) as caught:
        validate(operation, body)
    return caught.value
