"""The tuning cache: MetaSchedule records keyed by workload and target, in a folder or under an S3 prefix.

One object per (workload, target): ``<target id>/<workload hash>.json``, holding the workload itself (to confirm a
hash match structurally), the target, and its best records first. Every write is a read-merge-write of that one
object, replaced atomically (a folder: a locked read, a temporary sibling and a rename; S3: a conditional PUT on
the ETag read, retried when another worker won the race), so concurrent workers merge rather than overwrite.

Where: ``$NEOCOMPILE_TUNING_CACHE`` (``s3://bucket/prefix`` or a folder), else ``$NEOCOMPILE_CACHE/tuning``, else
``~/.cache/neocompile/tuning``. This module moves JSON; ``apply`` and ``tune`` interpret it (TVM is imported only to
check what ``import_entries`` reads).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import random
import secrets
import time
from pathlib import Path
from typing import Any, Iterator

from ..errors import StorageError, ValidationError

FORMAT = "neocompile.tuning/1"
EXPORT_FORMAT = "neocompile.tuning-export/1"
#: Records kept per (workload, target): the best few, so a trace that no longer applies has successors.
KEEP = 8
ENV = "NEOCOMPILE_TUNING_CACHE"
_WRITE_ATTEMPTS = 20


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def target_id(target: str) -> str:
    """A short, file-name-safe id of a canonical target string."""
    return hashlib.blake2b(target.encode(), digest_size=8).hexdigest()


@dataclasses.dataclass
class Entry:
    """The records of one workload (a fused PrimFunc) on one target, best first."""

    target: str  # canonical TVM target JSON (tuning.target_key)
    workload_hash: str  # 16 hex digits: TVM's structural hash of the workload module
    workload: list[Any]  # MetaSchedule's Workload JSON: [hash, base64 of the module]
    task: str  # the kernel name it was tuned under (for people; not part of the key)
    records: list[dict[str, Any]]  # {"record": TuningRecord JSON, "latency_us", "source", "date"}
    trials: int = 0  # candidates measured for it in all, over every merge
    tvm: str = ""
    updated: str = ""

    @property
    def name(self) -> str:
        return f"{target_id(self.target)}/{self.workload_hash}.json"

    @property
    def best_us(self) -> float | None:
        return self.records[0]["latency_us"] if self.records else None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Entry":
        """Parse and check one entry's shape (not the TVM objects inside: ``apply.check_entry`` does that)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValidationError(f"{where}: not a tuning record set (format {got!r}); expected format {FORMAT!r}")
        problems = []
        for field, kind in (("target", str), ("workload_hash", str), ("workload", list), ("task", str), ("records", list)):
            if not isinstance(data.get(field), kind):
                problems.append(f"'{field}' must be a {kind.__name__}")
        if not problems and not (len(data["workload_hash"]) == 16 and all(c in "0123456789abcdef" for c in data["workload_hash"])):
            problems.append(f"'workload_hash' {data['workload_hash']!r} is not 16 hex digits")
        for i, rec in enumerate(data.get("records") or []):
            if not (isinstance(rec, dict) and isinstance(rec.get("record"), list)
                    and isinstance(rec.get("latency_us"), (int, float)) and not isinstance(rec.get("latency_us"), bool)
                    and rec["latency_us"] > 0):
                problems.append(f"records[{i}] must be {{\"record\": [...], \"latency_us\": a positive number, ...}}")
        if problems:
            raise ValidationError(f"{where}: {'; '.join(problems)}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def merged(self, other: "Entry") -> "Entry":
        """Both entries' records, duplicates (same trace) once with the better time, best first, the best KEEP."""
        best: dict[str, dict[str, Any]] = {}
        for rec in self.records + other.records:
            key = json.dumps(rec["record"][0], sort_keys=True)  # the trace
            if key not in best or rec["latency_us"] < best[key]["latency_us"]:
                best[key] = rec
        records = sorted(best.values(), key=lambda r: r["latency_us"])[:KEEP]
        return dataclasses.replace(self, records=records, trials=self.trials + other.trials,
                                   tvm=other.tvm or self.tvm, updated=max(self.updated, other.updated))


class _Folder:
    kind = "folder"

    def __init__(self, root: Path):
        self.root = root
        self.location = str(root)

    def read(self, name: str) -> tuple[bytes | None, Any]:
        try:
            return (self.root / name).read_bytes(), None
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            raise StorageError(f"Tuning cache {self.root}: cannot read {name}: {exc.strerror}") from None

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold the object's lock across a read-merge-write (readers never need it: writes are renames)."""
        path = self.root / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path.parent / f".{path.name}.lock", os.O_WRONLY | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StorageError(f"Tuning cache {self.root} is not writable: {exc.strerror}; expected a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def write(self, name: str, data: bytes, version: Any) -> bool:
        path = self.root / name
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"Tuning cache {self.root}: writing {name} failed: {exc.strerror}") from None
        return True

    def names(self, folder: str = "*") -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in self.root.glob(f"{folder}/*.json"))

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


class _S3:
    kind = "s3"

    def __init__(self, bucket: str, prefix: str):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read(self, name: str) -> tuple[bytes | None, Any]:
        from ..storage import s3

        return s3.read_object(self.bucket, self._key(name), ENV)

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        yield  # S3 has no locks: write() is conditional on the ETag read() saw

    def write(self, name: str, data: bytes, version: Any) -> bool:
        from ..storage import s3

        return s3.write_object(self.bucket, self._key(name), data, ENV, if_match=version)

    def names(self, folder: str = "*") -> list[str]:
        from ..storage import s3

        base = f"{self.prefix}/" if self.prefix else ""
        listed = self._key(folder) if folder != "*" else self.prefix
        rels = (key[len(base):] for key in s3.list_keys(self.bucket, listed, ENV))
        return [rel for rel in rels if rel.count("/") == 1 and rel.endswith(".json")]

    def delete(self, name: str) -> None:
        from ..storage import s3

        s3.delete_object(self.bucket, self._key(name), ENV)


class TuningCache:
    """Records by (workload, target): ``get`` for one kernel, ``put`` to merge new records in, ``entries`` to list."""

    def __init__(self, location: str | None = None):
        from .. import storage

        location = location or os.environ.get(ENV) or str(_default_root())
        scheme, *where = storage.parse_uri(location, ENV)
        self._store: _Folder | _S3 = _S3(*where) if scheme == "s3" else _Folder(Path(where[0]))

    @property
    def kind(self) -> str:
        """``folder`` or ``s3``."""
        return self._store.kind

    @property
    def location(self) -> str:
        return self._store.location

    def get(self, workload_hash: str, target: str) -> Entry | None:
        name = f"{target_id(target)}/{workload_hash}.json"
        data, _ = self._store.read(name)
        if data is None:
            return None
        entry = _parse(data, f"{self.location}/{name}")
        return entry if entry is not None and entry.target == target else None

    def hashes(self, target: str) -> set[str]:
        """The workload hashes with records for ``target``: one listing, so a job reads only the objects it needs."""
        return {n.split("/")[1][:-5] for n in self._store.names(target_id(target))}

    def entries(self) -> Iterator[Entry]:
        """Every entry; unreadable objects are skipped (``tuning list`` shows what parses)."""
        for name in self._store.names():
            data, _ = self._store.read(name)
            entry = _parse(data, f"{self.location}/{name}") if data is not None else None
            if entry is not None:
                yield entry

    def put(self, entry: Entry) -> Entry:
        """Merge ``entry`` into the stored one for its (workload, target) and store the result atomically."""
        entry.updated = entry.updated or now_iso()
        for attempt in range(_WRITE_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0, 0.02 * attempt))  # another worker won the race: let it finish
            with self._store.exclusive(entry.name):
                data, version = self._store.read(entry.name)
                current = _parse(data, entry.name) if data is not None else None
                merged = current.merged(entry) if current is not None and current.target == entry.target else entry
                if self._store.write(entry.name, json.dumps(merged.to_json(), indent=1).encode(), version):
                    return merged
        raise StorageError(f"Tuning cache {self.location}: {entry.name} kept changing under {_WRITE_ATTEMPTS} attempts to merge into it")

    def delete(self, entry: Entry) -> None:
        self._store.delete(entry.name)


def _default_root() -> Path:
    from ..device.tvm_runtime import cache_root

    return cache_root() / "tuning"


def _parse(data: bytes, where: str) -> Entry | None:
    try:
        return Entry.from_json(json.loads(data), where)
    except (ValueError, ValidationError):
        return None  # a damaged object is as good as none; the next put replaces it


def read_export(path: Path) -> list[Entry]:
    """Read an export file (``tuning export``), checking every entry's shape; raise ValidationError naming the first
    problem."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read it: {exc.strerror}") from None
    except ValueError as exc:
        raise ValidationError(f"{path}: not valid JSON ({exc}); expected a file written by `neocompile tuning export`") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT or not isinstance(data.get("entries"), list):
        raise ValidationError(
            f"{path}: not a tuning export; expected a JSON object with \"format\": \"{EXPORT_FORMAT}\" and \"entries\": [...]"
        )
    return [Entry.from_json(item, f"{path}: entries[{i}]") for i, item in enumerate(data["entries"])]


def write_export(entries: list[Entry], path: Path) -> None:
    """Write entries as an export file, atomically."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        tmp.write_text(json.dumps({"format": EXPORT_FORMAT, "entries": [e.to_json() for e in entries]}, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ValidationError(f"{path}: cannot write it: {exc.strerror}") from None


def import_entries(cache: TuningCache, path: Path) -> list[Entry]:
    """Merge an export file into ``cache``. Every entry is checked first (shape, and that TVM parses its workload,
    records and target), so a malformed file writes nothing; records imported are marked ``source: imported``."""
    from .apply import check_entry

    entries = read_export(path)
    for i, entry in enumerate(entries):
        problem = check_entry(entry)
        if problem:
            raise ValidationError(f"{path}: entries[{i}] ({entry.task}, workload {entry.workload_hash}): {problem}; nothing was imported")
    for entry in entries:
        entry.records = [{**rec, "source": "imported"} for rec in entry.records]
        entry.updated = now_iso()
        cache.put(entry)
    return entries


def prune(cache: TuningCache, older_than_days: int | None = None, target: str | None = None) -> list[Entry]:
    """Delete the entries last updated more than ``older_than_days`` ago and/or for ``target`` (both: both must
    hold; neither: every entry). Returns what was deleted."""
    cutoff = None
    if older_than_days is not None:
        cutoff = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=older_than_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    removed = []
    for entry in cache.entries():
        if (cutoff is None or entry.updated < cutoff) and (target is None or entry.target == target):
            cache.delete(entry)
            removed.append(entry)
    return removed


def describe_target(target: str) -> str:
    """A target key as people read it: ``llvm -mtriple=... -mcpu=...`` (the key itself is canonical JSON)."""
    try:
        config = json.loads(target)
    except ValueError:
        return target
    if not isinstance(config, dict):
        return target
    flags = [f"-{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in config.items()
             if k not in ("kind", "tag", "keys") and v not in ("", None, [])]
    return " ".join([str(config.get("kind", "?")), *flags])
