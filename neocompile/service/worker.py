"""A worker: takes queued compilation jobs from the store and runs each compile in a supervised child process group.

While a compile runs, the worker looks at its job every ``POLL_SECONDS``: STOPPING (StopCompilationJob) or a lost
lease kills the compile's process group at once; it renews the job's lease every ``LEASE_SECONDS / 4`` and kills the
compile when the job's deadline (CompilationStartTime + MaxRuntimeInSeconds) passes. A worker killed outright takes
its compile with it (the child dies with its parent) and the job's lease runs out: ``JobService.recover`` (run by every
server and worker) re-queues it. A worker asked to shut down (SIGTERM, SIGINT) ends its compile and re-queues the job
without counting the attempt, so a restart resumes it.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from ..errors import JobStopped, NeoError
from .jobs import DEFAULT_MAX_RUNTIME, LEASE_SECONDS, RECOVER_SECONDS, JobService, failure_reason
from .store import now as now_ms
from .store import COMPLETED, FAILED, INPROGRESS, RUNNING, STARTING, STOPPED, STOPPING, JobRecord, JobStore

log = logging.getLogger("neocompile.worker")

#: How often a running job's status is read: a Stop ends the compile within this plus the kill (well under 2 s).
POLL_SECONDS = 0.25
_SHUTDOWN = "the worker is shutting down"


class Worker:
    def __init__(self, store: JobStore, name: str | None = None):
        self.store = store
        self.id = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stop_event = threading.Event()

    def run(self) -> None:
        """Take and run jobs until :meth:`shutdown`; also settles jobs other workers lost."""
        recovery = threading.Thread(target=recover_forever, args=(JobService(self.store), self.stop_event),
                                    name="recover", daemon=True)
        recovery.start()
        log.info("worker %s: waiting for jobs", self.id)
        self.store.serve_jobs(self.id, LEASE_SECONDS, self.execute, self.stop_event)
        log.info("worker %s: stopped", self.id)

    def shutdown(self) -> None:
        self.stop_event.set()

    def execute(self, job: JobRecord) -> None:
        """Run one claimed (INPROGRESS, leased to this worker) job to a terminal state."""
        from .. import pipeline
        from ..deadline import run_supervised

        now = now_ms()
        limit = job.request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME)
        start = job.start_time or now  # a re-run keeps the first start: the deadline covers the whole job
        taken = self.store.update(job.name, when=(INPROGRESS,), worker=self.id, start_time=start,
                                  deadline=job.deadline or start + limit, stage=f"taken by {self.id} (attempt {job.attempts})")
        if taken is None:
            return  # stopped or deleted between the claim and now
        log.info("job %s: taken by %s (attempt %d)", job.name, self.id, job.attempts)
        renewed = [now]

        def should_stop() -> str | None:
            t = time.time()
            if self.stop_event.is_set():
                return _SHUTDOWN
            current = self.store.get(job.name)
            if current is None:
                return "the job was deleted"
            if current.worker != self.id or current.status not in RUNNING:
                return f"the job's lease was lost (now {current.status}, held by {current.worker})"
            if current.status == STOPPING:
                return "StopCompilationJob"
            if t - renewed[0] >= LEASE_SECONDS / 4:
                if self.store.update(job.name, when=RUNNING, worker=self.id, lease_expires=t + LEASE_SECONDS) is None:
                    return "the job's lease was lost"
                renewed[0] = t
            return None

        def progress(event: Any) -> None:
            detail = event.detail if event.status != "done" else f"{event.seconds:.1f} s" + (f", {event.detail}" if event.detail else "")
            self.store.add_event(job.name, time.time(), event.stage, event.status, detail)
            log.info("job %s: %s %s%s", job.name, event.stage, event.status, f" ({detail})" if detail else "")

        try:
            request = pipeline.CompilationRequest.from_api(job.request)
            request.max_runtime_seconds = max(1, int(taken.deadline - time.time()))
            result = run_supervised(request, progress, deadline=taken.deadline, limit=limit, should_stop=should_stop,
                                    poll=POLL_SECONDS)
        except JobStopped as exc:
            self._stopped(job, str(exc))
        except NeoError as exc:
            self._finish(job, FAILED, failure_reason=failure_reason(exc.reason))
        except Exception as exc:  # a bug, not the user's input: still a terminal state with the cause
            log.exception("job %s: internal error", job.name)
            self._finish(job, FAILED, failure_reason=failure_reason(f"InternalError: {type(exc).__name__}: {exc}"))
        else:
            self._finish(job, COMPLETED, artifact_uri=result.artifact_uri, artifact_digest=result.artifact_digest,
                         derived_input=json.dumps(result.derived_data_input_config))

    def _finish(self, job: JobRecord, status: str, **fields: Any) -> None:
        now = now_ms()
        done = self.store.update(job.name, when=RUNNING, worker=self.id, status=status, end_time=now,
                                 last_modified_time=now, lease_expires=None, stage=status.lower(), **fields)
        log.info("job %s: %s%s", job.name, status if done else f"{status}, but the job was no longer this worker's",
                 f": {fields['failure_reason']}" if fields.get("failure_reason") else "")

    def _stopped(self, job: JobRecord, reason: str) -> None:
        now = now_ms()
        if reason == _SHUTDOWN:
            # Back to the queue, this attempt not counted: the restarted (or another) worker runs it again.
            if self.store.update(job.name, when=(INPROGRESS,), worker=self.id, status=STARTING, lease_expires=None,
                                 attempts=max(0, job.attempts - 1), last_modified_time=now, stage="re-queued: worker shut down"):
                self.store.enqueue(job.name)
                log.info("job %s: re-queued (%s)", job.name, reason)
                return
        if self.store.update(job.name, when=(STOPPING,), worker=self.id, status=STOPPED, end_time=now,
                             last_modified_time=now, lease_expires=None, stage="stopped"):
            log.info("job %s: STOPPED", job.name)
        else:
            log.info("job %s: compile ended (%s)", job.name, reason)


def recover_forever(service: JobService, stop: threading.Event) -> None:
    while not stop.wait(RECOVER_SECONDS):
        try:
            service.recover()
        except Exception:  # a store hiccup must not end recovery for good
            log.exception("recovery pass failed")
