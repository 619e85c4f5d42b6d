"""The compilation-job domain: SageMaker's operations on jobs, their states and shapes; no HTTP here.

States (CompilationJobStatus): a created job is STARTING (queued) until a worker takes it (INPROGRESS), then
COMPLETED or FAILED. StopCompilationJob ends a queued job at once (STOPPED) and asks a running one's worker to
kill its compile (STOPPING, then STOPPED). A running job's worker renews a lease; :func:`JobService.recover` re-queues
a job whose worker stopped renewing (killed, machine lost) once, fails it the second time, and fails a job that
outlived its MaxRuntimeInSeconds while nobody ran it.

Requests arrive already checked against botocore's model (``service.validation``); what is left here are the rules
that need the store: names, states, ARNs, paging tokens.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
from typing import Any, Callable

from .. import __version__
from .store import now as now_ms
from .store import (SORT_COLUMNS, COMPLETED, FAILED, INPROGRESS, STARTING, STOPPED, STOPPING, TERMINAL, JobRecord, JobStore,
                    ListQuery, NameTaken)

log = logging.getLogger("neocompile.service")

ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
#: Jobs without StoppingCondition.MaxRuntimeInSeconds get SageMaker's documented default, one day.
DEFAULT_MAX_RUNTIME = 86400
#: A worker renews its job's lease every LEASE_SECONDS / 4; a job whose lease is LEASE_SECONDS old lost its worker.
LEASE_SECONDS = 10.0
#: How often servers and workers look for lost jobs: a killed worker's job is re-queued (or failed) at most
#: LEASE_SECONDS + RECOVER_SECONDS after the worker's last renewal.
RECOVER_SECONDS = 2.0
#: Times a job is given to a worker before a lost lease fails it instead of re-queueing it.
MAX_ATTEMPTS = 2
MAX_TAGS = 50
FAILURE_REASON_MAX = 1024


class ServiceError(Exception):
    """A client error with AWS's error code; the wire layer sends it as HTTP 400 ``{"__type": code, "message": ...}``."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def not_found(name: str) -> ServiceError:
    return ServiceError("ResourceNotFound", f"Could not find compilation job '{name}'.")


#: ARN resource types -> store kinds.
ARN_KINDS = {"compilation-job": "compilation", "transform-job": "transform", "model": "model"}


def job_arn(region: str, name: str, resource: str = "compilation-job") -> str:
    return f"arn:aws:sagemaker:{region}:{ACCOUNT}:{resource}/{name}"


def failure_reason(text: str) -> str:
    """FailureReason is at most 1024 characters: keep the head (the cause) and say that it was cut."""
    text = text.strip()
    return text if len(text) <= FAILURE_REASON_MAX else text[: FAILURE_REASON_MAX - 14].rstrip() + " ... (cut)"


class JobService:
    """The operations of the compilation-job API over one :class:`JobStore`."""

    def __init__(self, store: JobStore):
        self.store = store
        self._token_key = store.secret()

    # ---- CreateCompilationJob / Describe / Stop / Delete ----
    def create(self, body: dict[str, Any], region: str | None = None) -> dict[str, Any]:
        name = body["CompilationJobName"]
        if "ModelPackageVersionArn" in body:
            raise ServiceError("ValidationException", "ModelPackageVersionArn: neocompile has no model package registry; "
                               "give InputConfig (S3Uri, Framework, DataInputConfig) instead")
        now = now_ms()
        request = {k: v for k, v in body.items() if k != "Tags"}
        tags = {t["Key"]: t["Value"] for t in body.get("Tags", [])}
        job = JobRecord(name=name, arn=job_arn(region or DEFAULT_REGION, name), request=request, status=STARTING,
                        creation_time=now, last_modified_time=now, tags=tags, stage="queued")
        try:
            self.store.insert(job)
        except NameTaken:
            raise ServiceError("ResourceInUse", f"Compilation job '{name}' already exists; job names are unique "
                               "within an account and region (delete the old job first)") from None
        self.store.enqueue(name)
        log.info("job %s: created (%s)", name, _target_text(request))
        return {"CompilationJobArn": job.arn}

    def get(self, name: str) -> JobRecord:
        job = self.store.get(name)
        if job is None:
            raise not_found(name)
        return job

    def describe(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.describe_record(self.get(body["CompilationJobName"]))

    def describe_record(self, job: JobRecord) -> dict[str, Any]:
        req = job.request
        out: dict[str, Any] = {
            "CompilationJobName": job.name,
            "CompilationJobArn": job.arn,
            "CompilationJobStatus": job.status,
            "StoppingCondition": req.get("StoppingCondition", {}),
            "CreationTime": job.creation_time,
            "LastModifiedTime": job.last_modified_time,
            "FailureReason": job.failure_reason,
            "ModelArtifacts": {"S3ModelArtifacts": job.artifact_uri or req["OutputConfig"]["S3OutputLocation"]},
            "RoleArn": req["RoleArn"],
            "InputConfig": req.get("InputConfig", {}),
            "OutputConfig": req["OutputConfig"],
        }
        for key, value in (("CompilationStartTime", job.start_time), ("CompilationEndTime", job.end_time),
                           ("VpcConfig", req.get("VpcConfig")), ("ModelPackageVersionArn", req.get("ModelPackageVersionArn"))):
            if value is not None:
                out[key] = value
        if job.status == COMPLETED and str(req["OutputConfig"].get("TargetDevice", "")).startswith("ml_"):
            # Neo names the serving container for cloud instances; a neocompile package runs in the image docker/
            # builds (`neocompile run`, runtime.Model), tagged with the version that compiled it.
            out["InferenceImage"] = f"neocompile:{__version__}"
        if job.artifact_digest:
            out["ModelDigests"] = {"ArtifactDigest": job.artifact_digest}
        if job.derived_input:
            out["DerivedInformation"] = {"DerivedDataInputConfig": job.derived_input}
        return out

    def stop(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["CompilationJobName"]
        now = now_ms()
        while True:
            job = self.get(name)
            if job.status in (STOPPING, STOPPED):
                return {}  # already being stopped: Stop is idempotent
            if job.status in (COMPLETED, FAILED):
                raise ServiceError("ValidationException", f"Compilation job '{name}' is {job.status}; only a STARTING or "
                                   "INPROGRESS job can be stopped")
            if job.status == STARTING:
                # Nobody runs it: it ends now. The worker that may take it concurrently loses the conditional update.
                done = self.store.update(name, when=(STARTING,), status=STOPPED, end_time=now, last_modified_time=now,
                                         stage="stopped before a worker took it")
            else:
                # Its worker sees STOPPING at its next lease renewal, kills the compile's process group, sets STOPPED.
                done = self.store.update(name, when=(INPROGRESS,), status=STOPPING, last_modified_time=now)
            if done is not None:
                log.info("job %s: stop requested (%s -> %s)", name, job.status, done.status)
                return {}

    def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["CompilationJobName"]
        job = self.get(name)
        if job.status not in TERMINAL or not self.store.delete(name, TERMINAL):
            raise ServiceError("ValidationException", f"Compilation job '{name}' is {job.status}; only a COMPLETED, FAILED "
                               "or STOPPED job can be deleted (stop it, then delete it once it is STOPPED)")
        log.info("job %s: deleted", name)
        return {}

    # ---- ListCompilationJobs ----
    def list(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.page("compilation", body, "CompilationJobSummaries", _summary, request_keys=("OutputConfig",))

    def page(self, kind: str, body: dict[str, Any], result_key: str, summary: Callable[[JobRecord], dict[str, Any]],
             default_order: str = "Ascending", statuses: dict[str, tuple[str, ...]] | None = None,
             created_after_inclusive: bool = False, request_keys: tuple[str, ...] = ()) -> dict[str, Any]:
        """One page of a List* call over ``kind``: filter, then sort, then page (keyset: strictly after the token).

        ``statuses`` maps a wire StatusEquals to the stored statuses it means (transform jobs: InProgress is STARTING
        or INPROGRESS); ``created_after_inclusive``: ListModels' CreationTimeAfter is ">=" where the others are ">";
        ``request_keys``: the request members ``summary`` reads (the others are not fetched).
        """
        status = body.get("StatusEquals")
        after = body.get("CreationTimeAfter")
        q = ListQuery(
            kind=kind,
            name_contains=body.get("NameContains"),
            status=(statuses or {}).get(status, status) if status else None,
            # ">=" as a strict ">" one millisecond earlier: stored times have millisecond precision.
            created_after=after - 0.001 if after is not None and created_after_inclusive else after,
            created_before=body.get("CreationTimeBefore"),
            modified_after=body.get("LastModifiedTimeAfter"),
            modified_before=body.get("LastModifiedTimeBefore"),
            sort_by=body.get("SortBy", "CreationTime"),
            descending=body.get("SortOrder", default_order) == "Descending",
            limit=body.get("MaxResults", 10),
            request_keys=request_keys,
        )
        fingerprint = self._fingerprint(kind, body)
        if body.get("NextToken"):
            q.after = self._read_token(body["NextToken"], fingerprint)
        page = self.store.query(dataclasses.replace(q, limit=q.limit + 1))
        more = len(page) > q.limit
        page = page[: q.limit]
        out: dict[str, Any] = {result_key: [summary(j) for j in page]}
        if more:
            last = page[-1]
            out["NextToken"] = self._make_token((getattr(last, SORT_COLUMNS[q.sort_by]), last.name), fingerprint)
        return out

    @staticmethod
    def _fingerprint(kind: str, body: dict[str, Any]) -> str:
        """What a token is bound to: the listing, its filters and its order (a token is refused with other ones)."""
        keys = ("NameContains", "StatusEquals", "CreationTimeAfter", "CreationTimeBefore", "LastModifiedTimeAfter",
                "LastModifiedTimeBefore", "SortBy", "SortOrder")
        return hashlib.sha256(json.dumps([kind] + [body.get(k) for k in keys]).encode()).hexdigest()[:16]

    def _make_token(self, after: tuple[Any, str], fingerprint: str) -> str:
        payload = base64.urlsafe_b64encode(json.dumps({"a": list(after), "f": fingerprint}).encode()).decode()
        mac = hmac.new(self._token_key, payload.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{payload}.{mac}"

    def _read_token(self, token: str, fingerprint: str) -> tuple[Any, str]:
        payload, _, mac = token.rpartition(".")
        good = hmac.new(self._token_key, payload.encode(), hashlib.sha256).hexdigest()[:32]
        if not payload or not hmac.compare_digest(mac, good):
            raise ServiceError("ValidationException", 'Invalid pagination token because "it was not issued by this '
                               'service or was altered".')
        data = json.loads(base64.urlsafe_b64decode(payload))
        if data["f"] != fingerprint:
            raise ServiceError("ValidationException", 'Invalid pagination token because "it belongs to a request with '
                               'other filters or sort order".')
        return tuple(data["a"])  # type: ignore[return-value]

    # ---- AddTags / ListTags / DeleteTags on compilation-job, transform-job and model ARNs ----
    def _job_of_arn(self, arn: str) -> JobRecord:
        resource = arn.split(":", 5)[5] if arn.count(":") >= 5 else ""
        kind_name, _, name = resource.partition("/")
        kind = ARN_KINDS.get(kind_name)
        job = self.store.get(name, kind) if kind and name else None
        if job is None or arn.split(":")[4] != ACCOUNT:
            raise ServiceError("ResourceNotFound", f"Could not find resource '{arn}': neocompile tags compilation jobs, "
                               "transform jobs and models (arn:aws:sagemaker:<region>:<account>:compilation-job/<name>, "
                               "...:transform-job/<name>, ...:model/<name>)")
        return job

    def add_tags(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self._job_of_arn(body["ResourceArn"])
        tags = {**job.tags, **{t["Key"]: t["Value"] for t in body["Tags"]}}
        if len(tags) > MAX_TAGS:
            raise ServiceError("ResourceLimitExceeded", f"A resource has at most {MAX_TAGS} tags; '{job.arn}' would have {len(tags)}")
        self.store.update(job.name, kind=job.kind, tags=tags)
        return {"Tags": body["Tags"]}

    def list_tags(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self._job_of_arn(body["ResourceArn"])
        return {"Tags": [{"Key": k, "Value": v} for k, v in sorted(job.tags.items())]}

    def delete_tags(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self._job_of_arn(body["ResourceArn"])
        self.store.update(job.name, kind=job.kind, tags={k: v for k, v in job.tags.items() if k not in set(body["TagKeys"])})
        return {}

    # ---- crash recovery ----
    def recover(self, now: float | None = None) -> list[str]:
        """Settle jobs whose worker stopped renewing its lease; return what was done, one line per job."""
        now = now_ms() if now is None else now
        done = []
        for job in self.store.expired(now):
            lost = f"its worker {job.worker} stopped renewing its lease (killed or unreachable)"
            if job.status == STOPPING:
                change = dict(status=STOPPED, end_time=now, stage=f"stopped: {lost}")
            elif job.deadline is not None and now >= job.deadline:
                change = dict(status=FAILED, end_time=now, failure_reason=failure_reason(
                    f"ClientError: The compilation job exceeded StoppingCondition.MaxRuntimeInSeconds; {lost}"))
            elif job.attempts < MAX_ATTEMPTS:
                change = dict(status=STARTING, stage=f"re-queued: {lost}")
            else:
                change = dict(status=FAILED, end_time=now, failure_reason=failure_reason(
                    f"ClientError: The compilation job was given to a worker {job.attempts} times and each time {lost}; "
                    "it may crash its worker (out of memory?)"))
            if self.store.update(job.name, when=(job.status,), worker=job.worker, kind=job.kind, lease_expires=None,
                                 last_modified_time=now, **change) is None:
                continue  # its worker came back, or another server settled it first
            if job.kind == "compilation":
                _discard_partial(job)
            if change["status"] == STARTING:
                self.store.enqueue(job.name, job.kind)
            label = "job" if job.kind == "compilation" else f"{job.kind} job"
            done.append(f"{label} {job.name}: {job.status} -> {change['status']} ({lost})")
            log.warning(done[-1])
        return done


def _summary(job: JobRecord) -> dict[str, Any]:
    out = {
        "CompilationJobName": job.name,
        "CompilationJobArn": job.arn,
        "CreationTime": job.creation_time,
        "LastModifiedTime": job.last_modified_time,
        "CompilationJobStatus": job.status,
    }
    if job.start_time is not None:
        out["CompilationStartTime"] = job.start_time
    if job.end_time is not None:
        out["CompilationEndTime"] = job.end_time
    output = job.request["OutputConfig"]
    if "TargetDevice" in output:
        out["CompilationTargetDevice"] = output["TargetDevice"]
    else:
        platform = output.get("TargetPlatform", {})
        for key in ("Os", "Arch", "Accelerator"):
            if key in platform:
                out[f"CompilationTargetPlatform{key}"] = platform[key]
    return out


def _target_text(request: dict[str, Any]) -> str:
    out = request.get("OutputConfig", {})
    return str(out.get("TargetDevice") or out.get("TargetPlatform"))


def _discard_partial(job: JobRecord) -> None:
    """A lost worker may have left a multipart upload open: abort it, so no part of the artifact is ever visible."""
    try:
        from .. import package, storage

        req = job.request
        name = package.package_name(req["InputConfig"]["S3Uri"], _artifact_target(req))
        storage.discard_partial(req["OutputConfig"]["S3OutputLocation"], name)
    except Exception as exc:  # best effort: the job's state is already settled
        log.warning("job %s: could not clean its output location: %s", job.name, exc)


def _artifact_target(req: dict[str, Any]) -> str:
    from ..targets import get_target, resolve_platform

    out = req["OutputConfig"]
    return (get_target(out["TargetDevice"]) if "TargetDevice" in out else resolve_platform(out["TargetPlatform"])).name
