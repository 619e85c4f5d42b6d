"""A worker: takes queued jobs from the store and runs them: each compile in a supervised child process group, each
transform job through ``transform_runner``.

While a job runs, a watch thread reads it every ``POLL_SECONDS`` and renews its lease every ``LEASE_SECONDS / 4``:
STOPPING (Stop*Job) or a lost lease kills the compile's process group at once (a transform ends between two
mini-batches); a compile is also killed when its deadline (CompilationStartTime + MaxRuntimeInSeconds) passes. A worker killed outright takes
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
        # What execute() imports, loaded before the first job instead of on it (~0.5 s of its pick-up).
        from .. import pipeline  # noqa: F401
        from .. import deadline  # noqa: F401
        log.info("worker %s: waiting for jobs", self.id)
        self.store.serve_jobs(self.id, LEASE_SECONDS, self.execute, self.stop_event)
        log.info("worker %s: stopped", self.id)

    def shutdown(self) -> None:
        self.stop_event.set()

    def execute(self, job: JobRecord) -> None:
        """Run one claimed (INPROGRESS, leased to this worker) job of any kind to a terminal state."""
        now = now_ms()
        limit = job.request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME)
        start = job.start_time or now  # a re-run keeps the first start: the deadline covers the whole job
        deadline = job.deadline or (start + limit if job.kind == "compilation" else None)
        taken = self.store.update(job.name, when=(INPROGRESS,), worker=self.id, kind=job.kind, start_time=start,
                                  deadline=deadline, stage=f"taken by {self.id} (attempt {job.attempts})")
        if taken is None:
            return  # stopped or deleted between the claim and now
        log.info("%s %s: taken by %s (attempt %d)", _LABEL[job.kind], job.name, self.id, job.attempts)
        watch = _Watch(self, taken)
        try:
            fields = (self._compile if job.kind == "compilation" else self._transform)(taken, watch)
        except JobStopped as exc:
            self._stopped(job, str(exc))
        except NeoError as exc:
            self._finish(job, FAILED, failure_reason=failure_reason(exc.reason))
        except Exception as exc:  # a bug, not the user's input: still a terminal state with the cause
            log.exception("%s %s: internal error", _LABEL[job.kind], job.name)
            self._finish(job, FAILED, failure_reason=failure_reason(f"InternalError: {type(exc).__name__}: {exc}"))
        else:
            self._finish(job, COMPLETED, **fields)
        finally:
            watch.close()

    def _progress(self, job: JobRecord, stage: str, status: str, detail: str) -> None:
        self.store.add_event(job.name, time.time(), stage, status, detail, kind=job.kind)
        log.info("%s %s: %s %s%s", _LABEL[job.kind], job.name, stage, status, f" ({detail})" if detail else "")

    def _compile(self, job: JobRecord, watch: "_Watch") -> dict[str, Any]:
        from .. import pipeline
        from ..deadline import run_supervised

        def progress(event: Any) -> None:
            done = f"{event.seconds:.1f} s" + (f", {event.detail}" if event.detail else "")
            self._progress(job, event.stage, event.status, event.detail if event.status != "done" else done)

        request = pipeline.CompilationRequest.from_api(job.request)
        request.max_runtime_seconds = max(1, int(job.deadline - time.time()))
        limit = job.request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME)
        result = run_supervised(request, progress, deadline=job.deadline, limit=limit, should_stop=watch.reason,
                                poll=POLL_SECONDS)
        return dict(artifact_uri=result.artifact_uri, artifact_digest=result.artifact_digest,
                    derived_input=json.dumps(result.derived_data_input_config))

    def _transform(self, job: JobRecord, watch: "_Watch") -> dict[str, Any]:
        from . import transform_runner

        model = self.store.get(job.request["ModelName"], "model")
        if model is None:
            raise NeoError(f"ModelName '{job.request['ModelName']}': the model was deleted before the job ran")
        counts = transform_runner.run(job.request, model.request, watch.reason,
                                      lambda stage, text: self._progress(job, stage, "note", text))
        return dict(stage_note=f"{counts['records']} records in {counts['objects']} object(s)")

    def _finish(self, job: JobRecord, status: str, **fields: Any) -> None:
        now = now_ms()
        stage = fields.pop("stage_note", None)
        done = self.store.update(job.name, when=RUNNING, worker=self.id, kind=job.kind, status=status, end_time=now,
                                 last_modified_time=now, lease_expires=None,
                                 stage=status.lower() + (f": {stage}" if stage else ""), **fields)
        log.info("%s %s: %s%s", _LABEL[job.kind], job.name,
                 status if done else f"{status}, but the job was no longer this worker's",
                 f": {fields['failure_reason']}" if fields.get("failure_reason") else "")

    def _stopped(self, job: JobRecord, reason: str) -> None:
        now = now_ms()
        if reason == _SHUTDOWN:
            # Back to the queue, this attempt not counted: the restarted (or another) worker runs it again.
            if self.store.update(job.name, when=(INPROGRESS,), worker=self.id, kind=job.kind, status=STARTING,
                                 lease_expires=None, attempts=max(0, job.attempts - 1), last_modified_time=now,
                                 stage="re-queued: worker shut down"):
                self.store.enqueue(job.name, job.kind)
                log.info("%s %s: re-queued (%s)", _LABEL[job.kind], job.name, reason)
                return
        if self.store.update(job.name, when=(STOPPING,), worker=self.id, kind=job.kind, status=STOPPED, end_time=now,
                             last_modified_time=now, lease_expires=None, stage="stopped"):
            log.info("%s %s: STOPPED", _LABEL[job.kind], job.name)
        else:
            log.info("%s %s: ended (%s)", _LABEL[job.kind], job.name, reason)


_LABEL = {"compilation": "job", "transform": "transform job"}


class _Watch:
    """Watches one running job from a thread: renews its lease every LEASE_SECONDS / 4 and reads its status every
    POLL_SECONDS; :meth:`reason` says why the job must end now (StopCompilationJob/StopTransformJob, a lost lease,
    the worker's shutdown), or None. A thread, so that a long call (one mini-batch, one compile stage) never lets
    the lease run out."""

    def __init__(self, worker: Worker, job: JobRecord):
        self.worker, self.job = worker, job
        self._reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{job.name}", daemon=True)
        self._thread.start()

    def reason(self) -> str | None:
        if self.worker.stop_event.is_set():
            return _SHUTDOWN
        return self._reason

    def _run(self) -> None:
        store, job, me = self.worker.store, self.job, self.worker.id
        renewed = time.time()
        while not self._done.wait(POLL_SECONDS):
            try:
                current = store.get(job.name, job.kind)
                if current is None:
                    self._reason = "the job was deleted"
                elif current.worker != me or current.status not in RUNNING:
                    self._reason = f"the job's lease was lost (now {current.status}, held by {current.worker})"
                elif current.status == STOPPING:
                    self._reason = "stopped by request"
                elif time.time() - renewed >= LEASE_SECONDS / 4:
                    t = time.time()
                    if store.update(job.name, when=RUNNING, worker=me, kind=job.kind, lease_expires=t + LEASE_SECONDS) is None:
                        self._reason = "the job's lease was lost"
                    renewed = t
            except Exception:  # a store hiccup: try again at the next poll (the lease has 10 s of slack)
                log.exception("%s %s: watching the job failed", _LABEL[job.kind], job.name)

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)


def recover_forever(service: JobService, stop: threading.Event) -> None:
    while not stop.wait(RECOVER_SECONDS):
        try:
            service.recover()
        except Exception:  # a store hiccup must not end recovery for good
            log.exception("recovery pass failed")
