"""The embedded job store: one SQLite file (WAL mode) shared by the server's threads and its local workers.

Every connection is per thread; writes that read-then-write (claim, conditional update) run in ``BEGIN IMMEDIATE``
transactions, which SQLite serializes across processes, so two workers never take the same job and two creates of
one name never both succeed (the name is the primary key).
"""
from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable

from . import INPROGRESS, RUNNING, SORT_COLUMNS, STARTING, JobRecord, JobStore, ListQuery, NameTaken

_TYPES = {"request": "TEXT NOT NULL", "tags": "TEXT NOT NULL", "name": "TEXT NOT NULL", "kind": "TEXT NOT NULL",
          "attempts": "INTEGER NOT NULL"}

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs ({", ".join(f"{c} {_TYPES.get(c, '')}".strip() for c in JobRecord.columns())},
  PRIMARY KEY (kind, name));
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, creation_time);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (kind, creation_time, name);
CREATE TABLE IF NOT EXISTS events (kind TEXT NOT NULL, name TEXT NOT NULL, seq INTEGER PRIMARY KEY AUTOINCREMENT,
  time REAL NOT NULL, stage TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_name ON events (kind, name, seq);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class SQLiteStore(JobStore):
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below), reads see committed data.
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    def _tx(self) -> "_Transaction":
        return _Transaction(self._db())

    def insert(self, job: JobRecord) -> None:
        cols = JobRecord.columns()
        try:
            with self._tx() as db:
                db.execute(f"INSERT INTO jobs ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", job.to_row())
        except sqlite3.IntegrityError:
            raise NameTaken(job.name) from None

    def get(self, name: str, kind: str = "compilation") -> JobRecord | None:
        row = self._db().execute(f"SELECT {','.join(JobRecord.columns())} FROM jobs WHERE kind = ? AND name = ?",
                                 (kind, name)).fetchone()
        return JobRecord.from_row(row) if row else None

    def query(self, q: ListQuery) -> list[JobRecord]:
        where, args = ["kind = ?"], [q.kind]
        if isinstance(q.status, tuple):
            where.append(f"status IN ({','.join('?' * len(q.status))})")
            args.extend(q.status)
        if q.name_contains:
            # instr() is a case-sensitive substring test; SageMaker's NameContains ignores case.
            where.append("instr(lower(name), ?) > 0")
            args.append(q.name_contains.lower())
        for column, op, value in (("status", "=", q.status if isinstance(q.status, str) else None), ("creation_time", ">", q.created_after),
                                  ("creation_time", "<", q.created_before), ("last_modified_time", ">", q.modified_after),
                                  ("last_modified_time", "<", q.modified_before)):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        column = SORT_COLUMNS[q.sort_by]
        order = "DESC" if q.descending else "ASC"
        if q.after is not None:
            cmp = "<" if q.descending else ">"
            if column == "name":
                where.append(f"name {cmp} ?")
                args.append(q.after[1])
            else:
                where.append(f"({column}, name) {cmp} (?, ?)")
                args.extend(q.after)
        sql = f"SELECT {','.join(_select_columns(q.request_keys))} FROM jobs WHERE " + " AND ".join(where)
        sql += f" ORDER BY {column} {order}" + (f", name {order}" if column != "name" else "") + " LIMIT ?"
        return [JobRecord.from_row(r) for r in self._db().execute(sql, (*args, q.limit)).fetchall()]

    def update(self, name: str, when: Iterable[str] | None = None, worker: str | None = None, kind: str = "compilation",
               **changes: Any) -> JobRecord | None:
        with self._tx() as db:
            job = self._get_in(db, name, kind)
            if job is None or (when is not None and job.status not in tuple(when)) or (worker is not None and job.worker != worker):
                return None
            if not changes:
                return job
            for k, v in changes.items():
                setattr(job, k, v)
            sets = ",".join(f"{k} = ?" for k in changes)
            row = dict(zip(JobRecord.columns(), job.to_row()))
            db.execute(f"UPDATE jobs SET {sets} WHERE kind = ? AND name = ?", [row[k] for k in changes] + [kind, name])
            return job

    def _get_in(self, db: sqlite3.Connection, name: str, kind: str) -> JobRecord | None:
        row = db.execute(f"SELECT {','.join(JobRecord.columns())} FROM jobs WHERE kind = ? AND name = ?", (kind, name)).fetchone()
        return JobRecord.from_row(row) if row else None

    def delete(self, name: str, when: Iterable[str], kind: str = "compilation") -> bool:
        statuses = tuple(when)
        with self._tx() as db:
            gone = db.execute(f"DELETE FROM jobs WHERE kind = ? AND name = ? AND status IN ({','.join('?' * len(statuses))})",
                              (kind, name, *statuses)).rowcount
            if gone:
                db.execute("DELETE FROM events WHERE kind = ? AND name = ?", (kind, name))
            return bool(gone)

    def claim(self, worker: str, lease_seconds: float, now: float) -> JobRecord | None:
        with self._tx() as db:
            row = db.execute("SELECT kind, name FROM jobs WHERE status = ? ORDER BY creation_time, name LIMIT 1",
                             (STARTING,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = ?, worker = ?, lease_expires = ?, attempts = attempts + 1, "
                       "last_modified_time = ? WHERE kind = ? AND name = ?", (INPROGRESS, worker, now + lease_seconds, now, *row))
            return self._get_in(db, row[1], row[0])

    def expired(self, now: float) -> list[JobRecord]:
        rows = self._db().execute(
            f"SELECT {','.join(JobRecord.columns())} FROM jobs WHERE status IN (?, ?) AND lease_expires < ?", (*RUNNING, now)
        ).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    def add_event(self, name: str, when: float, stage: str, status: str, detail: str, kind: str = "compilation") -> None:
        line = f"{stage}: {detail}" if status == "note" else f"{stage}: {status}" + (f" ({detail})" if detail else "")
        with self._tx() as db:
            db.execute("INSERT INTO events (kind, name, time, stage, status, detail) VALUES (?, ?, ?, ?, ?, ?)",
                       (kind, name, when, stage, status, detail))
            db.execute("UPDATE jobs SET stage = ? WHERE kind = ? AND name = ?", (line[:1024], kind, name))

    def events(self, name: str, kind: str = "compilation") -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT time, stage, status, detail FROM events WHERE kind = ? AND name = ? ORDER BY seq",
                                  (kind, name)).fetchall()
        return [{"Time": t, "Stage": s, "Status": st, "Detail": d} for t, s, st, d in rows]

    def secret(self) -> bytes:
        with self._tx() as db:
            row = db.execute("SELECT value FROM settings WHERE key = 'token-secret'").fetchone()
            if row:
                return bytes(row[0])
            value = secrets.token_bytes(32)
            db.execute("INSERT INTO settings (key, value) VALUES ('token-secret', ?)", (value,))
            return value

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): takes SQLite's write lock up front."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _select_columns(request_keys: tuple[str, ...] | None) -> list[str]:
    """The job columns to select, ``request`` reduced to ``request_keys`` (ListQuery.request_keys) when given."""
    if request_keys is None:
        return list(JobRecord.columns())
    for key in request_keys:
        if not key.isidentifier():
            raise ValueError(f"request key {key!r} is not a plain member name")
    reduced = ("json_object(" + ", ".join(f"'{k}', json(json_extract(request, '$.{k}'))" for k in request_keys) + ")"
               if request_keys else "'{}'")
    return [reduced if c == "request" else c for c in JobRecord.columns()]
