"""Job stores: where compilation jobs, their tags and their stage events live, and how workers take them.

One module per store: :mod:`.sqlite` (the embedded default, a file in the data directory) and :mod:`.postgres`
(many servers and workers on many machines). Both implement :class:`JobStore`; the domain (``service.jobs``) and
the worker only talk to this interface. A store is also the queue's source of truth: a job is queued while its
status is STARTING, and a running job holds a renewable *lease* (``lease_expires``) that its worker renews; a job
whose lease ran out lost its worker (killed, machine gone) and is re-queued or failed by ``jobs.recover``.
"""
from __future__ import annotations

import abc
import dataclasses
import functools
import json
import logging
import threading
import time
from typing import Any, Callable, Iterable

#: CompilationJobStatus values (botocore's enum); a job is queued while STARTING.
STARTING, INPROGRESS, COMPLETED, FAILED, STOPPING, STOPPED = "STARTING", "INPROGRESS", "COMPLETED", "FAILED", "STOPPING", "STOPPED"
TERMINAL = (COMPLETED, FAILED, STOPPED)
RUNNING = (INPROGRESS, STOPPING)
#: How often an idle polling worker looks for a queued job (pick-up latency).
POLL_SECONDS = 0.2


def now() -> float:
    """The time stored for events, in epoch seconds rounded to milliseconds: what botocore sends back in a filter
    (CreationTimeAfter=<a job's CreationTime>) has millisecond precision, and must compare equal."""
    return round(time.time(), 3)


class NameTaken(Exception):
    """A job with this name exists already."""


@dataclasses.dataclass
class JobRecord:
    """One compilation job as stored. Times are epoch seconds (float)."""

    name: str
    arn: str
    request: dict[str, Any]  # the validated Create* body, without Tags
    kind: str = "compilation"  # what it is: "compilation" (job), "transform" (job) or "model"; names are unique per kind
    status: str = STARTING
    creation_time: float = 0.0
    last_modified_time: float = 0.0
    start_time: float | None = None
    end_time: float | None = None
    deadline: float | None = None  # absolute epoch: CompilationStartTime + MaxRuntimeInSeconds
    failure_reason: str = ""
    artifact_uri: str | None = None
    artifact_digest: str | None = None
    derived_input: str | None = None  # DerivedDataInputConfig, JSON text
    stage: str = ""  # the latest stage event, one line ("compile: done in 12.3 s ...")
    worker: str | None = None  # who holds the lease: "<host>:<pid>"
    lease_expires: float | None = None
    attempts: int = 0  # times a worker took it
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    #: Columns in storage order (``request`` and ``tags`` stored as JSON text). Cached: from_row needs them for
    #: every row, and dataclasses.fields() on each was over a tenth of a 100-job List page's server time.
    @classmethod
    @functools.cache
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_row(self) -> list[Any]:
        return [json.dumps(v, sort_keys=True) if k in ("request", "tags") else v for k, v in dataclasses.asdict(self).items()]

    @classmethod
    def from_row(cls, row: Iterable[Any]) -> "JobRecord":
        values = dict(zip(cls.columns(), row))
        for k in ("request", "tags"):
            text = values[k]
            # Most jobs have no tags: "{}" skips a JSON decode per row (a List page reads 101 rows).
            values[k] = ({} if text == "{}" else json.loads(text)) if isinstance(text, str) else text
        return cls(**values)


@dataclasses.dataclass
class ListQuery:
    """ListCompilationJobs after validation: filter, then sort, then page (keyset: strictly after ``after``)."""

    kind: str = "compilation"
    name_contains: str | None = None
    status: str | tuple[str, ...] | None = None  # one status or any of several
    created_after: float | None = None
    created_before: float | None = None
    modified_after: float | None = None
    modified_before: float | None = None
    sort_by: str = "CreationTime"  # Name | CreationTime | Status
    descending: bool = False
    after: tuple[Any, str] | None = None  # (sort value, name) of the last item of the previous page
    limit: int = 10
    #: The request members the caller reads (a List summary: OutputConfig, or none); None: the whole request. The
    #: records returned hold only these in ``request``: a 100-item page then decodes no full request documents.
    request_keys: tuple[str, ...] | None = None


#: ListQuery.sort_by -> JobRecord column; ties are broken by name, so the order is total and keyset paging exact.
SORT_COLUMNS = {"Name": "name", "CreationTime": "creation_time", "Status": "status"}


class JobStore(abc.ABC):
    """The operations the domain and the workers need; every write is atomic."""

    @abc.abstractmethod
    def insert(self, job: JobRecord) -> None:
        """Add a new job; raise :class:`NameTaken` when the name exists (exactly one concurrent insert wins)."""

    @abc.abstractmethod
    def get(self, name: str, kind: str = "compilation") -> JobRecord | None: ...

    @abc.abstractmethod
    def query(self, q: ListQuery) -> list[JobRecord]:
        """At most ``q.limit`` jobs matching the filters, in order, strictly after ``q.after``."""

    @abc.abstractmethod
    def update(self, name: str, when: Iterable[str] | None = None, worker: str | None = None, kind: str = "compilation",
               **changes: Any) -> JobRecord | None:
        """Set ``changes`` if the job's status is in ``when`` (any status if None) and, when ``worker`` is given,
        the lease is held by that worker; return the updated job, or None if the condition failed."""

    @abc.abstractmethod
    def delete(self, name: str, when: Iterable[str], kind: str = "compilation") -> bool:
        """Remove a job (with its events) if its status is in ``when``."""

    @abc.abstractmethod
    def claim(self, worker: str, lease_seconds: float, now: float) -> JobRecord | None:
        """Atomically take the oldest STARTING job of any kind: INPROGRESS, leased to ``worker``; None when there is none."""

    @abc.abstractmethod
    def expired(self, now: float) -> list[JobRecord]:
        """Running jobs (INPROGRESS, STOPPING) whose lease ran out before ``now``."""

    @abc.abstractmethod
    def add_event(self, name: str, when: float, stage: str, status: str, detail: str, kind: str = "compilation") -> None:
        """Append a stage event and make it the job's ``stage`` line."""

    @abc.abstractmethod
    def events(self, name: str, kind: str = "compilation") -> list[dict[str, Any]]:
        """The job's stage events, oldest first: {Time, Stage, Status, Detail}."""

    @abc.abstractmethod
    def secret(self) -> bytes:
        """A per-store random key (created once) that signs pagination tokens, shared by every server on the store."""

    def enqueue(self, name: str, kind: str = "compilation") -> None:
        """Tell the workers a job is (again) STARTING. The SQLite store's workers poll the table, so nothing to do."""

    def serve_jobs(self, worker: str, lease_seconds: float, handle: Callable[[JobRecord], None], stop: threading.Event) -> None:
        """Take jobs one at a time and call ``handle`` with each (claimed, INPROGRESS) until ``stop`` is set.

        This default polls :meth:`claim`; a store with a real queue engine (PostgreSQL: Procrastinate) overrides it.
        """
        while not stop.is_set():
            job = self.claim(worker, lease_seconds, now())
            if job is None:
                stop.wait(POLL_SECONDS)
                continue
            try:
                handle(job)
            except Exception:  # as with Procrastinate: log, keep serving (the job's lease settles it)
                logging.getLogger("neocompile.worker").exception("job %s: the worker failed", job.name)

    def close(self) -> None:
        """Release connections."""


def open_store(url: str) -> JobStore:
    """``sqlite:///path/jobs.db`` (or a plain path) or ``postgresql://user@host/db``."""
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(url)
    from .sqlite import SQLiteStore

    return SQLiteStore(url.removeprefix("sqlite://") if url.startswith("sqlite://") else url)
