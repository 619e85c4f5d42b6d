"""``neocompile jobs ...``: a thin boto3 SageMaker client of the job API (any neocompile server, or anything that
speaks SageMaker's compilation-job operations).

Exit statuses: 0 done (``wait``: COMPLETED), 1 the call failed or the job FAILED, 2 malformed command line,
4 the job was STOPPED, 5 ``wait`` gave up (--timeout).
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


def add_commands(sub: Any, add_compile_args: Any) -> None:
    pj = sub.add_parser("jobs", help="create, watch and manage compilation jobs on a neocompile server (boto3 client)",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    jsub = pj.add_subparsers(dest="jobs_command", required=True)

    def add(name: str, func: Any, help_text: str, job: bool = True, json_flag: bool = True) -> argparse.ArgumentParser:
        p = jsub.add_parser(name, help=help_text, description=help_text)
        if job:
            p.add_argument("name", help="CompilationJobName")
        p.add_argument("--endpoint-url", help=f"the server (default $NEOCOMPILE_ENDPOINT_URL, $AWS_ENDPOINT_URL_SAGEMAKER, {DEFAULT_ENDPOINT})")
        p.add_argument("--region", help="AWS region in ARNs (default: the AWS configuration's, else us-east-1)")
        if json_flag:  # (create has compile-model's)
            p.add_argument("--json", action="store_true", help="print the API's response as JSON")
        p.set_defaults(func=_calling(func), parser=p)
        return p

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
            print(f"neocompile jobs {args.jobs_command}: error: {err.get('Code')}: {err.get('Message')}", file=sys.stderr)
        except BotoCoreError as exc:
            print(f"neocompile jobs {args.jobs_command}: error: {exc} (is `neocompile serve` running there?)", file=sys.stderr)
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
        body["Tags"] = [dict(zip(("Key", "Value"), part.split("=", 1))) for part in args.tags.split(",") if part]
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
