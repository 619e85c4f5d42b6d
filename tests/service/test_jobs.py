"""The job domain without HTTP: state transitions, lease recovery and FailureReason, over both stores."""
from __future__ import annotations

import pytest

from neocompile.service.jobs import FAILURE_REASON_MAX, LEASE_SECONDS, MAX_ATTEMPTS, JobService, ServiceError, failure_reason
from neocompile.service.store import (COMPLETED, FAILED, INPROGRESS, STARTING, STOPPED, STOPPING, open_store)
from neocompile.service.store import now as now_ms
from neocompile.service.validation import validate

BODY = {
    "CompilationJobName": "job", "RoleArn": "arn:aws:iam::123456789012:role/r",
    "InputConfig": {"S3Uri": "s3://bucket/model.tar.gz", "Framework": "ONNX"},
    "OutputConfig": {"S3OutputLocation": "s3://bucket/out", "TargetDevice": "ml_c4"}, "StoppingCondition": {},
}


@pytest.fixture(params=["sqlite", "postgres"])
def service(request, tmp_path) -> JobService:
    url = request.getfixturevalue("postgres_db") if request.param == "postgres" else str(tmp_path / "jobs.db")
    store = open_store(url)
    yield JobService(store)
    store.close()


def running(service: JobService, name: str, attempts: int = 1, **fields) -> None:
    service.create(validate("CreateCompilationJob", {**BODY, "CompilationJobName": name}))
    job = service.store.claim("host:1", LEASE_SECONDS, now_ms())
    assert job is not None and job.name == name
    service.store.update(name, attempts=attempts, **fields)


def test_stop_ends_a_queued_job_at_once_and_asks_a_running_one(service):
    service.create(validate("CreateCompilationJob", {**BODY, "CompilationJobName": "queued"}))
    service.stop({"CompilationJobName": "queued"})
    assert service.get("queued").status == STOPPED and service.get("queued").end_time is not None
    running(service, "busy")
    service.stop({"CompilationJobName": "busy"})
    assert service.get("busy").status == STOPPING  # its worker kills the compile, then sets STOPPED
    service.stop({"CompilationJobName": "busy"})  # idempotent while stopping
    service.store.update("busy", status=COMPLETED)
    with pytest.raises(ServiceError, match="is COMPLETED; only a STARTING or INPROGRESS job can be stopped"):
        service.stop({"CompilationJobName": "busy"})


def test_delete_only_in_a_terminal_state(service):
    running(service, "busy")
    with pytest.raises(ServiceError) as err:
        service.delete({"CompilationJobName": "busy"})
    assert err.value.code == "ValidationException" and "is INPROGRESS" in err.value.message
    service.store.update("busy", status=FAILED)
    service.delete({"CompilationJobName": "busy"})
    with pytest.raises(ServiceError) as err:
        service.describe({"CompilationJobName": "busy"})
    assert err.value.code == "ResourceNotFound"


def test_a_lost_lease_requeues_once_then_fails(service):
    running(service, "lost-once", attempts=1, lease_expires=now_ms() - 1)
    running(service, "lost-twice", attempts=MAX_ATTEMPTS, lease_expires=now_ms() - 1)
    running(service, "alive", lease_expires=now_ms() + 60)
    done = service.recover()
    assert len(done) == 2
    job = service.get("lost-once")
    assert job.status == STARTING and job.stage.startswith("re-queued: its worker host:1 stopped renewing its lease")
    job = service.get("lost-twice")
    assert job.status == FAILED and f"given to a worker {MAX_ATTEMPTS} times" in job.failure_reason and job.end_time
    assert service.get("alive").status == INPROGRESS
    assert service.recover() == []  # settled once


def test_a_lost_lease_of_a_stopping_or_overdue_job_ends_it(service):
    running(service, "stopping", status=STOPPING, lease_expires=now_ms() - 1)
    running(service, "overdue", lease_expires=now_ms() - 1, deadline=now_ms() - 5)
    service.recover()
    assert service.get("stopping").status == STOPPED
    overdue = service.get("overdue")
    assert overdue.status == FAILED and overdue.failure_reason.startswith("ClientError: The compilation job exceeded StoppingCondition")


def test_recovery_loses_to_a_worker_that_renewed_meanwhile(service):
    running(service, "renewed", lease_expires=now_ms() - 1)
    [job] = service.store.expired(now_ms())
    service.store.update("renewed", worker="host:1", lease_expires=now_ms() + 60)  # the worker's renewal wins
    assert service.store.update(job.name, when=(job.status,), worker="host:2", status=STARTING) is None
    service.recover()
    assert service.get("renewed").status == INPROGRESS


def test_failure_reason_keeps_the_cause_within_1024_characters():
    text = "ClientError: InputConfiguration: " + "x" * 5000
    cut = failure_reason(text)
    assert len(cut) <= FAILURE_REASON_MAX and cut.startswith("ClientError: InputConfiguration: x") and cut.endswith("(cut)")
    assert failure_reason("short") == "short"
