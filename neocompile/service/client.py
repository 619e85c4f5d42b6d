"""``neocompile jobs|models|transform ...``: a thin boto3 SageMaker client of the job API (any neocompile server, or
anything that speaks SageMaker's compilation-job, model and transform-job operations).

Exit statuses: 0 done (``wait``: COMPLETED / Completed), 1 the call failed or the job failed, 2 malformed command
line, 4 the job was stopped, 5 ``wait`` gave up (--timeout).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
DEFAULT_ROLE = "arn:aws:iam::123456789012:role/neocompile"
STOPPED_EXIT, WAIT_TIMEOUT_EXIT = 4, 5


def endpoint_url(given: str | None) -> str:
    return given or os.environ.get("NEOCOMPILE_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_SAGEMAKER") or DEFAULT_ENDPOINT


def sagemaker_client(endpoint: str | None, region: str | None):
    """boto3's SageMaker client on a neocompile server. Without configured AWS credentials it signs with a
    placeholder key, which a server without access keys accepts (one with keys answers UnrecognizedClientException)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    kwargs: dict[str, Any] = {}
    if session.get_credentials() is None:
        kwargs = {"aws_access_key_id": "neocompile", "aws_secret_access_key": "neocompile"}
    return session.client("sagemaker", endpoint_url=endpoint_url(endpoint),
                          region_name=region or session.region_name or "us-east-1",
                          config=Config(retries={"max_attempts": 3, "mode": "standard"}), **kwargs)


def _adder(parent: Any, noun: str) -> Any:
    """``add(name, func, help)``: a subcommand with the common client flags (and NAME unless job=False)."""

    def add(name: str, func: Any, help_text: str, job: bool = True, json_flag: bool = True) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        if job:
            p.add_argument("name", help=noun)
        p.add_argument("--endpoint-url", help=f"the server (default $NEOCOMPILE_ENDPOINT_URL, $AWS_ENDPOINT_URL_SAGEMAKER, {DEFAULT_ENDPOINT})")
        p.add_argument("--region", help="AWS region in ARNs (default: the AWS configuration's, else us-east-1)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print the API's response as JSON")
        p.set_defaults(func=_calling(func), parser=p)
        return p

    return add


def add_commands(sub: Any, add_compile_args: Any) -> None:
    _add_job_commands(sub, add_compile_args)
    _add_model_commands(sub)
    _add_transform_commands(sub)


def _add_job_commands(sub: Any, add_compile_args: Any) -> None:
    pj = sub.add_parser("jobs", help="create, watch and manage compilation jobs on a neocompile server (boto3 client)",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = _adder(pj.add_subparsers(dest="jobs_command", required=True), "CompilationJobName")

    pc = add("create", cmd_create, "submit a compilation job (flags as compile-model, or --cli-input-json)", job=False,
             json_flag=False)
    add_compile_args(pc)
    pc.add_argument("--role-arn", default=DEFAULT_ROLE, help=f"RoleArn (recorded; default {DEFAULT_ROLE})")
    pc.add_argument("--tags", help="Key=Value[,Key=Value...]")
    pc.add_argument("--wait", action="store_true", help="then wait for the job as `jobs wait` does")
    pc.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    pc.set_defaults(func=_calling(cmd_create))
    add("describe", cmd_describe, "show a job (DescribeCompilationJob) and its current stage")
    pl = add("list", cmd_list, "list jobs (ListCompilationJobs, all pages)", job=False)
    pl.add_argument("--name-contains")
    pl.add_argument("--status", dest="status_equals", help="INPROGRESS | COMPLETED | FAILED | STARTING | STOPPING | STOPPED")
    pl.add_argument("--sort-by", choices=("Name", "CreationTime", "Status"))
    pl.add_argument("--sort-order", choices=("Ascending", "Descending"))
    pl.add_argument("--max-items", type=int, help="stop after this many jobs")
    add("stop", cmd_stop, "stop a job (StopCompilationJob)")
    add("delete", cmd_delete, "delete a finished job's record (DeleteCompilationJob)")
    pw = add("wait", cmd_wait, "show a job's stage progress until it ends; exit status by outcome")
    pw.add_argument("--timeout", type=float, help="give up after this many seconds (exit 5)")
    pw.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")


def _calling(func: Any) -> Any:
    """Run a command; an API error or an unreachable server is one line on stderr and exit status 1."""

    def call(args: argparse.Namespace) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return func(args)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            print(f"{args.parser.prog}: error: {err.get('Code')}: {err.get('Message')}", file=sys.stderr)
        except BotoCoreError as exc:
            print(f"{args.parser.prog}: error: {exc} (is `neocompile serve` running there?)", file=sys.stderr)
        return 1

    return call


def _client(args: argparse.Namespace):
    return sagemaker_client(args.endpoint_url, args.region)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=lambda v: v.isoformat() if isinstance(v, dt.datetime) else str(v)))


def _strip(resp: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    """The CreateCompilationJob body from compile-model's flags (local paths become absolute file:// URIs, which
    the server's workers read: on one machine, the same files)."""
    from ..cli import build_request

    req = build_request(args)
    name = req.job_name or f"neocompile-{time.strftime('%Y%m%d-%H%M%S')}"
    body: dict[str, Any] = {
        "CompilationJobName": name,
        "RoleArn": args.role_arn,
        "InputConfig": {"S3Uri": _uri(req.model_uri), "Framework": req.framework},
        "OutputConfig": {"S3OutputLocation": _uri(req.output_location)},
        "StoppingCondition": {"MaxRuntimeInSeconds": req.max_runtime_seconds} if req.max_runtime_seconds else {},
    }
    if req.data_input_config is not None:
        body["InputConfig"]["DataInputConfig"] = _text(req.data_input_config)
    if req.framework_version:
        body["InputConfig"]["FrameworkVersion"] = req.framework_version
    if req.target_device:
        body["OutputConfig"]["TargetDevice"] = req.target_device
    if req.target_platform:
        body["OutputConfig"]["TargetPlatform"] = req.target_platform
    if req.compiler_options is not None:
        body["OutputConfig"]["CompilerOptions"] = _text(req.compiler_options)
    if args.tags:
        body["Tags"] = _tags(args.tags)
    return body


def _uri(location: str) -> str:
    return location if "://" in location else Path(location).expanduser().absolute().as_uri()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def cmd_create(args: argparse.Namespace) -> int:
    body = create_body(args)
    resp = _client(args).create_compilation_job(**body)
    if args.json:
        _print_json(_strip(resp))
    else:
        print(resp["CompilationJobArn"])
    if args.wait:
        args.name, args.interval = body["CompilationJobName"], 1.0
        return cmd_wait(args)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    resp = _client(args).describe_compilation_job(CompilationJobName=args.name)
    stage = resp["ResponseMetadata"]["HTTPHeaders"].get("x-neocompile-stage")
    out = _strip(resp)
    if stage:
        out["Stage"] = stage  # neocompile's progress line (not a SageMaker member)
    if args.json:
        _print_json(out)
        return 0
    for key in ("CompilationJobName", "CompilationJobStatus", "Stage", "CreationTime", "CompilationStartTime",
                "CompilationEndTime", "FailureReason"):
        if out.get(key):
            print(f"{key + ':':<22} {out[key]}")
    print(f"{'S3ModelArtifacts:':<22} {out['ModelArtifacts']['S3ModelArtifacts']}")
    if out.get("ModelDigests"):
        print(f"{'ArtifactDigest:':<22} {out['ModelDigests']['ArtifactDigest']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("NameContains", args.name_contains), ("StatusEquals", args.status_equals),
                                ("SortBy", args.sort_by), ("SortOrder", args.sort_order)) if v}
    pages = _client(args).get_paginator("list_compilation_jobs").paginate(
        **params, PaginationConfig={"MaxItems": args.max_items} if args.max_items else {})
    jobs = [j for page in pages for j in page["CompilationJobSummaries"]]
    if args.json:
        _print_json(jobs)
        return 0
    for j in jobs:
        target = j.get("CompilationTargetDevice") or "/".join(
            j[k] for k in ("CompilationTargetPlatformOs", "CompilationTargetPlatformArch") if k in j)
        print(f"{j['CompilationJobName']:<40} {j['CompilationJobStatus']:<11} {target:<14} {j['CreationTime']:%Y-%m-%d %H:%M:%S}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    _client(args).stop_compilation_job(CompilationJobName=args.name)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    _client(args).delete_compilation_job(CompilationJobName=args.name)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    """Poll Describe, print each new stage line on stderr; the exit status tells the outcome."""
    client = _client(args)
    end = None if args.timeout is None else time.monotonic() + args.timeout
    shown = None
    while True:
        resp = client.describe_compilation_job(CompilationJobName=args.name)
        status = resp["CompilationJobStatus"]
        line = f"{status}: {resp['ResponseMetadata']['HTTPHeaders'].get('x-neocompile-stage', '')}"
        if line != shown:
            print(f"[{dt.datetime.now():%H:%M:%S}] {args.name} {line}", file=sys.stderr, flush=True)
            shown = line
        if status in ("COMPLETED", "FAILED", "STOPPED"):
            break
        if end is not None and time.monotonic() >= end:
            print(f"neocompile jobs wait: {args.name} is still {status} after {args.timeout:g} s", file=sys.stderr)
            return WAIT_TIMEOUT_EXIT
        time.sleep(args.interval)
    if args.json:
        _print_json(_strip(resp))
    elif status == "COMPLETED":
        print(resp["ModelArtifacts"]["S3ModelArtifacts"])
    else:
        print(f"neocompile jobs wait: {args.name} {status}" + (f": {resp['FailureReason']}" if resp.get("FailureReason") else ""),
              file=sys.stderr)
    return {"COMPLETED": 0, "FAILED": 1}.get(status, STOPPED_EXIT)


# ---- neocompile models ----
def _add_model_commands(sub: Any) -> None:
    pm = sub.add_parser("models", help="create, show, list and delete models (CreateModel...) for batch transform")
    add = _adder(pm.add_subparsers(dest="models_command", required=True), "ModelName")
    pc = add("create", cmd_model_create, "register a compiled package (or an inference image) as a model")
    pc.add_argument("--model-data-url", help="the package: s3://.../model-<target>.tar.gz, file:// URI or a path")
    pc.add_argument("--image", help="a container image on SageMaker's inference contract (needs docker on the workers)")
    pc.add_argument("--role-arn", default=DEFAULT_ROLE, help=f"ExecutionRoleArn (recorded; default {DEFAULT_ROLE})")
    pc.add_argument("--tags", help="Key=Value[,Key=Value...]")
    add("describe", cmd_model_describe, "show a model (DescribeModel)")
    pl = add("list", cmd_model_list, "list models (ListModels, all pages)", job=False)
    pl.add_argument("--name-contains")
    pl.add_argument("--sort-by", choices=("Name", "CreationTime"))
    pl.add_argument("--sort-order", choices=("Ascending", "Descending"))
    add("delete", cmd_model_delete, "delete a model (DeleteModel)")


def _tags(text: str | None) -> list[dict[str, str]]:
    return [dict(zip(("Key", "Value"), part.split("=", 1))) for part in (text or "").split(",") if part]


def cmd_model_create(args: argparse.Namespace) -> int:
    container = {k: v for k, v in (("ModelDataUrl", args.model_data_url and _uri(args.model_data_url)),
                                   ("Image", args.image)) if v}
    body = {"ModelName": args.name, "PrimaryContainer": container, "ExecutionRoleArn": args.role_arn}
    if args.tags:
        body["Tags"] = _tags(args.tags)
    resp = _client(args).create_model(**body)
    _print_json(_strip(resp)) if args.json else print(resp["ModelArn"])
    return 0


def cmd_model_describe(args: argparse.Namespace) -> int:
    _print_json(_strip(_client(args).describe_model(ModelName=args.name)))
    return 0


def cmd_model_list(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("NameContains", args.name_contains), ("SortBy", args.sort_by),
                                ("SortOrder", args.sort_order)) if v}
    models = [m for page in _client(args).get_paginator("list_models").paginate(**params) for m in page["Models"]]
    if args.json:
        _print_json(models)
    for m in [] if args.json else models:
        print(f"{m['ModelName']:<40} {m['CreationTime']:%Y-%m-%d %H:%M:%S}")
    return 0


def cmd_model_delete(args: argparse.Namespace) -> int:
    _client(args).delete_model(ModelName=args.name)
    return 0


# ---- neocompile transform ----
def _add_transform_commands(sub: Any) -> None:
    pt = sub.add_parser("transform", help="run batch transform jobs with a model (CreateTransformJob...)")
    add = _adder(pt.add_subparsers(dest="transform_command", required=True), "TransformJobName")
    pc = add("create", cmd_transform_create, "score a dataset (every object under --input) with a model")
    pc.add_argument("--model-name", required=True, help="a model from `neocompile models create`")
    pc.add_argument("--input", required=True, help="S3Uri: a key prefix (s3://, file:// or a path) or a manifest")
    pc.add_argument("--input-type", default="S3Prefix", choices=("S3Prefix", "ManifestFile"))
    pc.add_argument("--content-type", help="text/csv, application/json, application/jsonlines, application/x-npy")
    pc.add_argument("--split-type", choices=("None", "Line", "RecordIO", "TFRecord"))
    pc.add_argument("--compression", choices=("None", "Gzip"))
    pc.add_argument("--output", required=True, help="S3OutputPath (s3://, file:// or a path)")
    pc.add_argument("--accept", help="the output's content type")
    pc.add_argument("--assemble-with", choices=("None", "Line"))
    pc.add_argument("--batch-strategy", choices=("SingleRecord", "MultiRecord"))
    pc.add_argument("--max-payload-mb", type=int)
    pc.add_argument("--max-concurrent-transforms", type=int)
    pc.add_argument("--input-filter", help='DataProcessing.InputFilter, e.g. "$[1:]"')
    pc.add_argument("--output-filter", help='DataProcessing.OutputFilter, e.g. "$[0,-1]"')
    pc.add_argument("--join-source", choices=("None", "Input"))
    pc.add_argument("--instance-type", default="ml.m5.large", help="TransformResources.InstanceType (recorded)")
    pc.add_argument("--tags", help="Key=Value[,Key=Value...]")
    pc.add_argument("--wait", action="store_true", help="then wait for the job as `transform wait` does")
    pc.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    add("describe", cmd_transform_describe, "show a transform job (DescribeTransformJob) and its current stage")
    pl = add("list", cmd_transform_list, "list transform jobs (ListTransformJobs, all pages)", job=False)
    pl.add_argument("--name-contains")
    pl.add_argument("--status", dest="status_equals", help="InProgress | Completed | Failed | Stopping | Stopped")
    add("stop", cmd_transform_stop, "stop a transform job (StopTransformJob)")
    pw = add("wait", cmd_transform_wait, "show a transform job's progress until it ends; exit status by outcome")
    pw.add_argument("--timeout", type=float, help="give up after this many seconds (exit 5)")
    pw.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")


def transform_body(args: argparse.Namespace) -> dict[str, Any]:
    """The CreateTransformJob body from the flags (local paths become file:// URIs)."""
    pick = lambda *pairs: {k: v for k, v in pairs if v is not None}  # noqa: E731
    body: dict[str, Any] = {
        "TransformJobName": args.name, "ModelName": args.model_name,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": args.input_type, "S3Uri": _uri(args.input)}},
                           **pick(("ContentType", args.content_type), ("SplitType", args.split_type),
                                  ("CompressionType", args.compression))},
        "TransformOutput": {"S3OutputPath": _uri(args.output), **pick(("Accept", args.accept),
                                                                       ("AssembleWith", args.assemble_with))},
        "TransformResources": {"InstanceType": args.instance_type, "InstanceCount": 1},
        **pick(("BatchStrategy", args.batch_strategy), ("MaxPayloadInMB", args.max_payload_mb),
               ("MaxConcurrentTransforms", args.max_concurrent_transforms)),
    }
    processing = pick(("InputFilter", args.input_filter), ("OutputFilter", args.output_filter),
                      ("JoinSource", args.join_source))
    if processing:
        body["DataProcessing"] = processing
    if args.tags:
        body["Tags"] = _tags(args.tags)
    return body


def cmd_transform_create(args: argparse.Namespace) -> int:
    resp = _client(args).create_transform_job(**transform_body(args))
    _print_json(_strip(resp)) if args.json else print(resp["TransformJobArn"])
    if args.wait:
        args.interval = 1.0
        return cmd_transform_wait(args)
    return 0


def cmd_transform_describe(args: argparse.Namespace) -> int:
    resp = _client(args).describe_transform_job(TransformJobName=args.name)
    out = _strip(resp)
    stage = resp["ResponseMetadata"]["HTTPHeaders"].get("x-neocompile-stage")
    if stage:
        out["Stage"] = stage
    _print_json(out)
    return 0


def cmd_transform_list(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("NameContains", args.name_contains), ("StatusEquals", args.status_equals)) if v}
    jobs = [j for page in _client(args).get_paginator("list_transform_jobs").paginate(**params)
            for j in page["TransformJobSummaries"]]
    if args.json:
        _print_json(jobs)
    for j in [] if args.json else jobs:
        print(f"{j['TransformJobName']:<40} {j['TransformJobStatus']:<11} {j['CreationTime']:%Y-%m-%d %H:%M:%S}")
    return 0


def cmd_transform_stop(args: argparse.Namespace) -> int:
    _client(args).stop_transform_job(TransformJobName=args.name)
    return 0


def cmd_transform_wait(args: argparse.Namespace) -> int:
    client = _client(args)
    end = None if args.timeout is None else time.monotonic() + args.timeout
    shown = None
    while True:
        resp = client.describe_transform_job(TransformJobName=args.name)
        status = resp["TransformJobStatus"]
        line = f"{status}: {resp['ResponseMetadata']['HTTPHeaders'].get('x-neocompile-stage', '')}"
        if line != shown:
            print(f"[{dt.datetime.now():%H:%M:%S}] {args.name} {line}", file=sys.stderr, flush=True)
            shown = line
        if status in ("Completed", "Failed", "Stopped"):
            break
        if end is not None and time.monotonic() >= end:
            print(f"neocompile transform wait: {args.name} is still {status} after {args.timeout:g} s", file=sys.stderr)
            return WAIT_TIMEOUT_EXIT
        time.sleep(args.interval)
    if status == "Completed":
        print(resp["TransformOutput"]["S3OutputPath"])
    else:
        print(f"neocompile transform wait: {args.name} {status}" + (f": {resp['FailureReason']}" if resp.get("FailureReason") else ""),
              file=sys.stderr)
    return {"Completed": 0, "Failed": 1}.get(status, STOPPED_EXIT)
