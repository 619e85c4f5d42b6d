"""The PostgreSQL job store: many servers and workers on many machines share one database.

Same tables and semantics as the SQLite store (text columns use the "C" collation so names sort byte-wise there
too); ``request`` and ``tags`` are jsonb. Every write is one statement or one transaction with row locks, so two
creates of one name never both succeed and two workers never take the same job (``FOR UPDATE SKIP LOCKED``).

The queue is Procrastinate, in the same database: :meth:`PostgresStore.enqueue` defers the ``neocompile.compile``
task for a job name, and :meth:`PostgresStore.serve_jobs` runs a Procrastinate worker woken by LISTEN/NOTIFY. The
jobs table stays the source of truth: the task takes its job only if it is still STARTING (:meth:`claim_named`), and
Procrastinate never retries (a job that lost its worker is re-queued by ``jobs.recover`` through the lease).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import threading
from typing import Any, Callable, Iterable

import procrastinate
import procrastinate.exceptions
import procrastinate.schema
import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.types.json import Jsonb

from . import now
from . import INPROGRESS, RUNNING, SORT_COLUMNS, STARTING, JobRecord, JobStore, ListQuery, NameTaken

logger = logging.getLogger(__name__)

#: Procrastinate's task and queue for compilation jobs; the task's only argument is the job name.
TASK = "neocompile.compile"
QUEUE = "compile"
#: How often an idle worker also polls Procrastinate's table, in case a NOTIFY was missed (reconnect).
FALLBACK_POLL_SECONDS = 2.0
#: How often serve_jobs looks at its ``stop`` event.
STOP_CHECK_SECONDS = 0.05
#: pg_advisory_xact_lock key that serializes schema creation by servers starting at once ("neoc" in ASCII).
_SCHEMA_LOCK = 0x6E656F63

_JSON = ("request", "tags")
_TYPES = {"name": 'TEXT COLLATE "C" NOT NULL', "kind": "TEXT NOT NULL", "arn": "TEXT NOT NULL", "request": "JSONB NOT NULL",
          "status": 'TEXT COLLATE "C" NOT NULL', "failure_reason": "TEXT NOT NULL", "stage": "TEXT NOT NULL",
          "attempts": "INTEGER NOT NULL", "tags": "JSONB NOT NULL"}
_TIMES = ("creation_time", "last_modified_time", "start_time", "end_time", "deadline", "lease_expires")
_COLUMNS = JobRecord.columns()
_SELECT = sql.SQL(",").join(map(sql.Identifier, _COLUMNS))


def _select(request_keys: tuple[str, ...] | None) -> sql.Composable:
    """The job columns to select, ``request`` reduced to ``request_keys`` (ListQuery.request_keys) when given."""
    if request_keys is None:
        return _SELECT
    reduced = (sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
                   sql.SQL("{}, request -> {}").format(sql.Literal(k), sql.Literal(k)) for k in request_keys))
               if request_keys else sql.SQL("'{}'::jsonb"))
    return sql.SQL(",").join(reduced if c == "request" else sql.Identifier(c) for c in _COLUMNS)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs ({", ".join(f"{c} {_TYPES.get(c, 'DOUBLE PRECISION' if c in _TIMES else 'TEXT')}"
                                            for c in _COLUMNS)}, PRIMARY KEY (kind, name));
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, creation_time, name);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (kind, creation_time, name);
CREATE TABLE IF NOT EXISTS events (seq BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL, name TEXT COLLATE "C" NOT NULL,
  time DOUBLE PRECISION NOT NULL, stage TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_name ON events (kind, name, seq);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
"""


def _value(column: str, value: Any) -> Any:
    return Jsonb(value) if column in _JSON else value


class PostgresStore(JobStore):
    def __init__(self, url: str, pool_size: int = 16):
        self.url = url
        self._create_schema()
        # check=: a connection the server closed (restart, idle timeout) is replaced instead of failing a request.
        self._pool = psycopg_pool.ConnectionPool(url, min_size=1, max_size=pool_size, open=False,
                                                 check=psycopg_pool.ConnectionPool.check_connection,
                                                 name="neocompile-jobs")
        self._pool.open(wait=True, timeout=30)
        # Deferring goes through Procrastinate's sync connector on this store's pool; the worker side opens its own
        # async pool in serve_jobs' event loop.
        self._queue = procrastinate.App(connector=procrastinate.SyncPsycopgConnector())
        self._queue.open(self._pool)

    def _create_schema(self) -> None:
        """Tables of both this store and Procrastinate, once per database; concurrent first starts wait in turn."""
        with psycopg.connect(self.url, connect_timeout=30) as db:
            encoding = db.execute("SHOW server_encoding").fetchone()[0]
            encoding = encoding.decode() if isinstance(encoding, bytes) else encoding  # SQL_ASCII answers in bytes
            if encoding.upper() not in ("UTF8", "UTF-8"):
                # Job requests, stage lines and failure reasons are Unicode text; SQL_ASCII (initdb in the C locale
                # without --encoding) stores them as nothing but bytes and psycopg cannot encode them.
                raise ValueError(f"the job store's PostgreSQL database is {encoding}; neocompile needs a UTF8 database "
                                 "(CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)")
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            db.execute(_SCHEMA)
            # Procrastinate's schema file is not idempotent (CREATE TYPE ...): apply it only to a fresh database.
            if db.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:
                db.execute(procrastinate.schema.SchemaManager.get_schema())

    def insert(self, job: JobRecord) -> None:
        values = dataclasses.asdict(job)
        query = sql.SQL("INSERT INTO jobs ({}) VALUES ({})").format(_SELECT, sql.SQL(",").join([sql.Placeholder()] * len(_COLUMNS)))
        try:
            with self._pool.connection() as db:
                db.execute(query, [_value(c, values[c]) for c in _COLUMNS])
        except psycopg.errors.UniqueViolation:
            raise NameTaken(job.name) from None

    def get(self, name: str, kind: str = "compilation") -> JobRecord | None:
        with self._pool.connection() as db:
            row = db.execute(sql.SQL("SELECT {} FROM jobs WHERE kind = %s AND name = %s").format(_SELECT), (kind, name)).fetchone()
        return JobRecord.from_row(row) if row else None

    def query(self, q: ListQuery) -> list[JobRecord]:
        where: list[sql.Composable] = [sql.SQL("kind = %s")]
        args: list[Any] = [q.kind]
        if isinstance(q.status, tuple):
            where.append(sql.SQL("status = ANY(%s)"))
            args.append(list(q.status))
        if q.name_contains:
            # strpos, not LIKE: no wildcard escaping; lower() on both sides as SageMaker's NameContains ignores case.
            where.append(sql.SQL("strpos(lower(name), lower(%s)) > 0"))
            args.append(q.name_contains)
        for column, op, value in (("status", "=", q.status if isinstance(q.status, str) else None), ("creation_time", ">", q.created_after),
                                  ("creation_time", "<", q.created_before), ("last_modified_time", ">", q.modified_after),
                                  ("last_modified_time", "<", q.modified_before)):
            if value is not None:
                where.append(sql.SQL(f"{column} {op} %s"))
                args.append(value)
        column = SORT_COLUMNS[q.sort_by]
        order = "DESC" if q.descending else "ASC"
        if q.after is not None:
            cmp = "<" if q.descending else ">"
            if column == "name":
                where.append(sql.SQL(f"name {cmp} %s"))
                args.append(q.after[1])
            else:
                where.append(sql.SQL(f"({column}, name) {cmp} (%s, %s)"))
                args.extend(q.after)
        query = sql.SQL("SELECT {} FROM jobs WHERE ").format(_select(q.request_keys)) + sql.SQL(" AND ").join(where)
        query += sql.SQL(f" ORDER BY {column} {order}" + (f", name {order}" if column != "name" else "") + " LIMIT %s")
        with self._pool.connection() as db:
            rows = db.execute(query, (*args, q.limit)).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def update(self, name: str, when: Iterable[str] | None = None, worker: str | None = None, kind: str = "compilation",
               **changes: Any) -> JobRecord | None:
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise TypeError(f"update() got unknown job columns: {', '.join(sorted(unknown))}")
        # One statement: the row lock taken by UPDATE makes the check and the write atomic (a concurrent writer's
        # change is re-checked against the WHERE clause before this one applies).
        where = [sql.SQL("kind = %s AND name = %s")]
        args: list[Any] = [kind, name]
        if when is not None:
            where.append(sql.SQL("status = ANY(%s)"))
            args.append(list(when))
        if worker is not None:
            where.append(sql.SQL("worker = %s"))
            args.append(worker)
        condition = sql.SQL(" AND ").join(where)
        if changes:
            sets = sql.SQL(",").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in changes)
            query = sql.SQL("UPDATE jobs SET {} WHERE {} RETURNING {}").format(sets, condition, _SELECT)
            args = [_value(k, v) for k, v in changes.items()] + args
        else:
            query = sql.SQL("SELECT {} FROM jobs WHERE {} FOR UPDATE").format(_SELECT, condition)
        with self._pool.connection() as db:
            row = db.execute(query, args).fetchone()
        return JobRecord.from_row(row) if row else None

    def delete(self, name: str, when: Iterable[str], kind: str = "compilation") -> bool:
        with self._pool.connection() as db:
            gone = db.execute("DELETE FROM jobs WHERE kind = %s AND name = %s AND status = ANY(%s)", (kind, name, list(when))).rowcount
            if gone:
                db.execute("DELETE FROM events WHERE kind = %s AND name = %s", (kind, name))
        return bool(gone)

    def claim(self, worker: str, lease_seconds: float, now: float) -> JobRecord | None:
        # SKIP LOCKED: concurrent claimers each lock a different oldest row instead of queueing behind one.
        query = sql.SQL(
            "UPDATE jobs SET status = %s, worker = %s, lease_expires = %s, attempts = attempts + 1, last_modified_time = %s "
            "WHERE (kind, name) = (SELECT kind, name FROM jobs WHERE status = %s ORDER BY creation_time, name LIMIT 1 "
            "FOR UPDATE SKIP LOCKED) "
            "RETURNING {}").format(_SELECT)
        with self._pool.connection() as db:
            row = db.execute(query, (INPROGRESS, worker, now + lease_seconds, now, STARTING)).fetchone()
        return JobRecord.from_row(row) if row else None

    def claim_named(self, name: str, worker: str, lease_seconds: float, now: float, kind: str = "compilation") -> JobRecord | None:
        """Take the job ``name`` like :meth:`claim` if it is still STARTING; None when it was stopped, deleted or taken."""
        query = sql.SQL(
            "UPDATE jobs SET status = %s, worker = %s, lease_expires = %s, attempts = attempts + 1, last_modified_time = %s "
            "WHERE kind = %s AND name = %s AND status = %s RETURNING {}").format(_SELECT)
        with self._pool.connection() as db:
            row = db.execute(query, (INPROGRESS, worker, now + lease_seconds, now, kind, name, STARTING)).fetchone()
        return JobRecord.from_row(row) if row else None

    def expired(self, now: float) -> list[JobRecord]:
        query = sql.SQL("SELECT {} FROM jobs WHERE status = ANY(%s) AND lease_expires < %s ORDER BY creation_time, name")
        with self._pool.connection() as db:
            rows = db.execute(query.format(_SELECT), (list(RUNNING), now)).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def add_event(self, name: str, when: float, stage: str, status: str, detail: str, kind: str = "compilation") -> None:
        line = f"{stage}: {detail}" if status == "note" else f"{stage}: {status}" + (f" ({detail})" if detail else "")
        with self._pool.connection() as db:
            db.execute("INSERT INTO events (kind, name, time, stage, status, detail) VALUES (%s, %s, %s, %s, %s, %s)",
                       (kind, name, when, stage, status, detail))
            db.execute("UPDATE jobs SET stage = %s WHERE kind = %s AND name = %s", (line[:1024], kind, name))

    def events(self, name: str, kind: str = "compilation") -> list[dict[str, Any]]:
        with self._pool.connection() as db:
            rows = db.execute("SELECT time, stage, status, detail FROM events WHERE kind = %s AND name = %s ORDER BY seq",
                              (kind, name)).fetchall()
        return [{"Time": t, "Stage": s, "Status": st, "Detail": d} for t, s, st, d in rows]

    def secret(self) -> bytes:
        # The first server's key wins; everyone (including that server) then reads the stored one.
        with self._pool.connection() as db:
            db.execute("INSERT INTO settings (key, value) VALUES ('token-secret', %s) ON CONFLICT (key) DO NOTHING",
                       (secrets.token_bytes(32),))
            return bytes(db.execute("SELECT value FROM settings WHERE key = 'token-secret'").fetchone()[0])

    def enqueue(self, name: str, kind: str = "compilation") -> None:
        """Defer ``neocompile.compile(name=..., kind=...)``; a job already waiting in the queue is not deferred twice."""
        try:
            self._queue.configure_task(TASK, queue=QUEUE, queueing_lock=f"{kind}/{name}").defer(name=name, kind=kind)
        except procrastinate.exceptions.AlreadyEnqueued:
            pass

    def serve_jobs(self, worker: str, lease_seconds: float, handle: Callable[[JobRecord], None], stop: threading.Event) -> None:
        """Run a Procrastinate worker (one job at a time) until ``stop`` is set; returns between jobs.

        Each task claims its job by name and calls ``handle`` in a worker thread. An exception from ``handle`` is
        logged by Procrastinate and the worker goes on (the domain records failures on the job itself).
        """

        def run(name: str, kind: str) -> None:
            job = self.claim_named(name, worker, lease_seconds, now(), kind)
            if job is None:
                logger.debug("queued job %s is no longer STARTING: skipped", name)
                return
            handle(job)

        asyncio.run(self._serve(worker, run, stop))

    async def _serve(self, worker: str, run: Callable[[str, str], None], stop: threading.Event) -> None:
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=self.url, min_size=1, max_size=3))
        app.task(name=TASK, queue=QUEUE, pass_context=True)(_compile_task)
        async with app.open_async():
            runner = asyncio.create_task(app.run_worker_async(
                queues=[QUEUE], name=worker, concurrency=1, listen_notify=True, install_signal_handlers=False,
                fetch_job_polling_interval=FALLBACK_POLL_SECONDS, delete_jobs="always", additional_context={"run": run}))
            while not stop.is_set() and not runner.done():
                await asyncio.sleep(STOP_CHECK_SECONDS)
            if runner.done():  # ended on its own: a lost database connection (its listener failed) or an error
                runner.result()
                raise RuntimeError("the Procrastinate worker stopped by itself (see its log above)")
            # Cancelling stops the worker gracefully: it waits for the running task, whose handler watches ``stop``.
            runner.cancel()
            try:
                await runner
            except asyncio.CancelledError:
                pass

    def close(self) -> None:
        self._queue.close()
        self._pool.close()


def _compile_task(context: procrastinate.JobContext, name: str, kind: str = "compilation") -> None:
    """Procrastinate's task: the worker's ``serve_jobs`` passes its claim-and-handle function in the context."""
    context.additional_context["run"](name, kind)
