"""Models and batch transform jobs: SageMaker's CreateModel / DescribeModel / ListModels / DeleteModel and
CreateTransformJob / DescribeTransformJob / ListTransformJobs / StopTransformJob, over the same store, queue, leases
and recovery as compilation jobs (``jobs.JobService``); no HTTP here. What a transform job does once a worker runs
it is in ``transform_runner``; how records are split, filtered, joined and assembled is in ``batch``.

A transform job's stored status is the compilation job's (STARTING ... STOPPED); the wire shows TransformJobStatus
(InProgress, Completed, Failed, Stopping, Stopped): STARTING and INPROGRESS are both InProgress.
"""
from __future__ import annotations

import logging
from typing import Any

from .jobs import ACCOUNT, DEFAULT_REGION, JobService, ServiceError, job_arn
from .store import COMPLETED, FAILED, INPROGRESS, STARTING, STOPPED, STOPPING, JobRecord, NameTaken
from .store import now as now_ms

log = logging.getLogger("neocompile.service")

TRANSFORM_STATUS = {STARTING: "InProgress", INPROGRESS: "InProgress", COMPLETED: "Completed", FAILED: "Failed",
                    STOPPING: "Stopping", STOPPED: "Stopped"}
#: StatusEquals -> the stored statuses it stands for.
TRANSFORM_STATUS_FILTER = {"InProgress": (STARTING, INPROGRESS), "Completed": (COMPLETED,), "Failed": (FAILED,),
                           "Stopping": (STOPPING,), "Stopped": (STOPPED,)}
#: A model is not a job: it has no status and is never queued.
MODEL_STATUS = ""


def model_arn(region: str, name: str) -> str:
    return job_arn(region, name, "model")


def model_missing(name: str, region: str | None = None) -> ServiceError:
    # AWS answers a missing model with ValidationException and this text (CreateEndpoint, DescribeModel, DeleteModel).
    return ServiceError("ValidationException", f'Could not find model "{model_arn(region or DEFAULT_REGION, name)}".')


class TransformService:
    """Models and transform jobs; shares its store, tokens and tags with a :class:`JobService`."""

    def __init__(self, jobs: JobService):
        self.jobs, self.store = jobs, jobs.store

    # ---- models ----
    def create_model(self, body: dict[str, Any], region: str | None = None) -> dict[str, Any]:
        name = body["ModelName"]
        containers = body.get("Containers") or []
        container = body.get("PrimaryContainer") or (containers[0] if len(containers) == 1 else None)
        if container is None:
            raise ServiceError("ValidationException", "CreateModel needs PrimaryContainer (or exactly one entry in "
                               f"Containers; got {len(containers)}): neocompile runs single-container models")
        if not container.get("ModelDataUrl") and not container.get("Image"):
            raise ServiceError("ValidationException", "PrimaryContainer: give ModelDataUrl (a neocompile package "
                               "model-<target>.tar.gz, s3:// or file://) and/or Image (a container image that follows "
                               "SageMaker's inference contract)")
        now = now_ms()
        arn = model_arn(region or DEFAULT_REGION, name)
        record = JobRecord(name=name, arn=arn, kind="model", status=MODEL_STATUS, creation_time=now,
                           last_modified_time=now, request={k: v for k, v in body.items() if k != "Tags"},
                           tags={t["Key"]: t["Value"] for t in body.get("Tags", [])})
        try:
            self.store.insert(record)
        except NameTaken:
            raise ServiceError("ValidationException", f'Cannot create already existing model "{arn}".') from None
        log.info("model %s: created (%s)", name, container.get("ModelDataUrl") or container.get("Image"))
        return {"ModelArn": arn}

    def model(self, name: str) -> JobRecord:
        found = self.store.get(name, "model")
        if found is None:
            raise model_missing(name)
        return found

    def describe_model(self, body: dict[str, Any]) -> dict[str, Any]:
        m = self.model(body["ModelName"])
        out = {"ModelName": m.name, "ModelArn": m.arn, "CreationTime": m.creation_time}
        for key in ("PrimaryContainer", "Containers", "InferenceExecutionConfig", "ExecutionRoleArn", "VpcConfig",
                    "EnableNetworkIsolation"):
            if key in m.request:
                out[key] = m.request[key]
        return out

    def list_models(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.jobs.page("model", body, "Models", lambda m: {"ModelName": m.name, "ModelArn": m.arn,
                                                                  "CreationTime": m.creation_time},
                              default_order="Descending", created_after_inclusive=True)

    def delete_model(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["ModelName"]
        if not self.store.delete(name, (MODEL_STATUS,), kind="model"):
            raise model_missing(name)
        log.info("model %s: deleted", name)
        return {}

    # ---- transform jobs ----
    def create_transform_job(self, body: dict[str, Any], region: str | None = None) -> dict[str, Any]:
        from . import batch

        name = body["TransformJobName"]
        model = self.store.get(body["ModelName"], "model")
        if model is None:
            raise model_missing(body["ModelName"], region)
        problems = batch.check(batch.TransformSpec.from_request(body))
        if problems:
            raise ServiceError("ValidationException", "; ".join(problems))
        _check_input_exists(body)
        now = now_ms()
        arn = job_arn(region or DEFAULT_REGION, name, "transform-job")
        record = JobRecord(name=name, arn=arn, kind="transform", status=STARTING, creation_time=now,
                           last_modified_time=now, stage="queued",
                           request={k: v for k, v in body.items() if k != "Tags"},
                           tags={t["Key"]: t["Value"] for t in body.get("Tags", [])})
        try:
            self.store.insert(record)
        except NameTaken:
            raise ServiceError("ResourceInUse", f"Transform job '{name}' already exists; job names are unique within "
                               "an account and region") from None
        self.store.enqueue(name, "transform")
        log.info("transform job %s: created (model %s)", name, model.name)
        return {"TransformJobArn": arn}

    def transform_job(self, name: str) -> JobRecord:
        found = self.store.get(name, "transform")
        if found is None:
            # AWS answers ValidationException here (the TransformJobCompletedOrStopped waiter relies on it).
            raise ServiceError("ValidationException",
                               f"Could not find transform job '{job_arn(DEFAULT_REGION, name, 'transform-job')}'.")
        return found

    def describe_transform_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.describe_transform_record(self.transform_job(body["TransformJobName"]))

    def describe_transform_record(self, job: JobRecord) -> dict[str, Any]:
        req = job.request
        out: dict[str, Any] = {
            "TransformJobName": job.name,
            "TransformJobArn": job.arn,
            "TransformJobStatus": TRANSFORM_STATUS[job.status],
            "ModelName": req["ModelName"],
            "TransformInput": req["TransformInput"],
            "TransformOutput": req["TransformOutput"],
            "TransformResources": req["TransformResources"],
            "CreationTime": job.creation_time,
        }
        if job.failure_reason:
            out["FailureReason"] = job.failure_reason
        for key in ("MaxConcurrentTransforms", "ModelClientConfig", "MaxPayloadInMB", "BatchStrategy", "Environment",
                    "DataCaptureConfig", "DataProcessing", "ExperimentConfig"):
            if key in req:
                out[key] = req[key]
        if job.start_time is not None:
            out["TransformStartTime"] = job.start_time
        if job.end_time is not None:
            out["TransformEndTime"] = job.end_time
        return out

    def list_transform_jobs(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.jobs.page("transform", body, "TransformJobSummaries", _transform_summary,
                              default_order="Descending", statuses=TRANSFORM_STATUS_FILTER)

    def stop_transform_job(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["TransformJobName"]
        now = now_ms()
        while True:
            job = self.transform_job(name)
            if job.status in (STOPPING, STOPPED):
                return {}
            if job.status in (COMPLETED, FAILED):
                raise ServiceError("ValidationException", f"Transform job '{name}' is {TRANSFORM_STATUS[job.status]}; "
                                   "only an InProgress job can be stopped")
            if job.status == STARTING:
                done = self.store.update(name, when=(STARTING,), kind="transform", status=STOPPED, end_time=now,
                                         last_modified_time=now, stage="stopped before a worker took it")
            else:
                done = self.store.update(name, when=(INPROGRESS,), kind="transform", status=STOPPING, last_modified_time=now)
            if done is not None:
                log.info("transform job %s: stop requested", name)
                return {}


def _transform_summary(job: JobRecord) -> dict[str, Any]:
    out = {"TransformJobName": job.name, "TransformJobArn": job.arn, "CreationTime": job.creation_time,
           "LastModifiedTime": job.last_modified_time, "TransformJobStatus": TRANSFORM_STATUS[job.status]}
    if job.end_time is not None:
        out["TransformEndTime"] = job.end_time
    if job.failure_reason:
        out["FailureReason"] = job.failure_reason
    return out


def _check_input_exists(body: dict[str, Any]) -> None:
    """AWS refuses a transform job whose input prefix holds no object at create time, with this text."""
    from .. import storage
    from ..errors import NeoError

    source = body["TransformInput"]["DataSource"]["S3DataSource"]
    uri = source["S3Uri"]
    try:
        found = storage.list_prefix(uri, "TransformInput.DataSource.S3DataSource.S3Uri")
    except NeoError as exc:
        raise ServiceError("ValidationException", f"TransformInput.DataSource.S3DataSource.S3Uri '{uri}' cannot be "
                           f"listed: {exc}") from None
    if source["S3DataType"] == "ManifestFile" and not any(u == uri for u, _ in found):
        found = []
    if not found:
        role = body.get("RoleArn") or f"arn:aws:iam::{ACCOUNT}:role/<the model's role>"
        raise ServiceError("ValidationException", f'No S3 objects found under S3 URL "{uri}" given in input data source. '
                           "Please ensure that the bucket exists in the selected region, that objects exist under that "
                           f'S3 prefix, and that the role "{role}" has "s3:ListBucket" permissions.')
