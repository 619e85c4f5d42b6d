"""The JobStore contract, checked the same way on both stores: SQLite (a file in tmp_path) and PostgreSQL (a fresh
database on the session's throwaway cluster), plus the PostgreSQL store's Procrastinate queue."""
from __future__ import annotations

import dataclasses
import multiprocessing
import random
import threading
import time
from collections.abc import Iterator

import pytest

from neocompile.service.store import (COMPLETED, FAILED, INPROGRESS, SORT_COLUMNS, STARTING, STOPPED, STOPPING, JobRecord,
                                      JobStore, ListQuery, NameTaken, open_store)

T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "jobs.db")
    return request.getfixturevalue("postgres_db")


@pytest.fixture
def store(store_url) -> Iterator[JobStore]:
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def pg_store(postgres_db) -> Iterator[JobStore]:
    s = open_store(postgres_db)
    yield s
    s.close()


def job(name: str, created: float = T0, status: str = STARTING, **fields) -> JobRecord:
    fields.setdefault("last_modified_time", created)
    fields.setdefault("request", {"CompilationJobName": name, "InputConfig": {"Framework": "ONNX"}})
    return JobRecord(name=name, arn=f"arn:aws:sagemaker:us-east-1:123456789012:compilation-job/{name}",
                     status=status, creation_time=created, **fields)


def all_pages(store: JobStore, q: ListQuery, between_pages=lambda: None) -> list[JobRecord]:
    seen, column = [], SORT_COLUMNS[q.sort_by]
    while True:
        page = store.query(q)
        seen += page
        if len(page) < q.limit:
            return seen
        q.after = (getattr(page[-1], column), page[-1].name)
        between_pages()


def sort_key(q: ListQuery):
    column = SORT_COLUMNS[q.sort_by]
    return lambda j: (getattr(j, column), j.name)


def test_insert_then_get_returns_the_same_record_with_request_and_tags(store):
    record = job("resnet-1", request={"A": [1, 2.5, None], "B": {"nested": "é"}}, tags={"team": "vision", "k": ""},
                 start_time=T0 + 1.25, end_time=None, deadline=T0 + 900.5, failure_reason="", artifact_uri="s3://b/k",
                 artifact_digest="sha256:ab", derived_input='{"data": [1, 3]}', stage="fetch: done", worker="h:1",
                 lease_expires=T0 + 30.125, attempts=2)
    store.insert(record)
    assert store.get("resnet-1") == record
    assert store.get("missing") is None


def test_query_reads_only_the_request_members_asked_for(store):
    request = {"CompilationJobName": "j", "OutputConfig": {"TargetDevice": "rasp3b", "S3OutputLocation": "s3://b/o"},
               "InputConfig": {"Framework": "ONNX", "DataInputConfig": '{"data": [1, 3, 8, 8]}'}}
    store.insert(job("j", request=request, tags={"team": "vision"}))
    assert store.query(ListQuery())[0].request == request  # by default: all of it
    (got,) = store.query(ListQuery(request_keys=("OutputConfig",)))
    assert got.request == {"OutputConfig": request["OutputConfig"]} and got.tags == {"team": "vision"}
    assert store.query(ListQuery(request_keys=()))[0].request == {}
    assert dataclasses.replace(got, request=request) == store.get("j")  # the rest of the record is the same


def test_insert_of_an_existing_name_raises_name_taken(store):
    store.insert(job("a"))
    with pytest.raises(NameTaken):
        store.insert(job("a", created=T0 + 5))
    assert store.get("a").creation_time == T0


def test_concurrent_inserts_of_one_name_let_exactly_one_win(store):
    barrier, results = threading.Barrier(8), []

    def create(i: int) -> None:
        barrier.wait()
        try:
            store.insert(job("same", created=T0 + i))
            results.append(("won", i))
        except NameTaken:
            results.append(("taken", i))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for outcome, i in results if outcome == "won"]
    assert len(results) == 8 and len(winners) == 1
    assert store.get("same").creation_time == T0 + winners[0]


def test_query_filters_by_name_case_insensitively_and_by_status(store):
    for name, status in (("ResNet-50", STARTING), ("my-resnet", COMPLETED), ("bert", COMPLETED), ("RESNETX", FAILED)):
        store.insert(job(name, status=status))
    names = lambda **kw: sorted(j.name for j in store.query(ListQuery(limit=100, **kw)))  # noqa: E731
    assert names(name_contains="resnet") == ["RESNETX", "ResNet-50", "my-resnet"]
    assert names(name_contains="NET-") == ["ResNet-50"]
    assert names(name_contains="%") == []  # no LIKE wildcards
    assert names(status=COMPLETED) == ["bert", "my-resnet"]
    assert names(name_contains="resnet", status=COMPLETED) == ["my-resnet"]
    assert names(status=STOPPED) == []


@pytest.mark.parametrize("field, column", [("created", "creation_time"), ("modified", "last_modified_time")])
def test_query_time_bounds_are_strict(store, field, column):
    for i in range(5):
        store.insert(job(f"j{i}", created=T0 + i, last_modified_time=T0 + 10 + i) if column == "creation_time"
                     else job(f"j{i}", created=T0 + 10 + i, last_modified_time=T0 + i))
    names = lambda **kw: [j.name for j in store.query(ListQuery(limit=100, **kw))]  # noqa: E731
    assert names(**{f"{field}_after": T0 + 1}) == ["j2", "j3", "j4"]
    assert names(**{f"{field}_before": T0 + 3}) == ["j0", "j1", "j2"]
    assert names(**{f"{field}_after": T0 + 1, f"{field}_before": T0 + 3}) == ["j2"]
    assert names(**{f"{field}_after": T0 + 1.5, f"{field}_before": T0 + 1.75}) == []
    assert names(**{f"{field}_after": T0 + 0.999999}) == ["j1", "j2", "j3", "j4"]


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("sort_by", sorted(SORT_COLUMNS))
def test_query_sorts_by_each_key_in_both_orders_with_name_breaking_ties(store, sort_by, descending):
    # Ties in CreationTime and Status; names mixing case and hyphens sort byte-wise (SQLite's BINARY, Postgres' "C").
    names = ["b", "B-2", "a-1", "A", "aa", "Z9", "a"]
    statuses = [COMPLETED, STARTING, COMPLETED, FAILED, STARTING, STOPPED, INPROGRESS]
    records = [job(n, created=T0 + i % 3, status=s) for i, (n, s) in enumerate(zip(names, statuses))]
    for r in records:
        store.insert(r)
    q = ListQuery(sort_by=sort_by, descending=descending, limit=100)
    got = [j.name for j in store.query(q)]
    assert got == [j.name for j in sorted(records, key=sort_key(q), reverse=descending)]
    q.limit = 3
    assert [j.name for j in store.query(q)] == got[:3]


def _many_jobs(store: JobStore, n: int, seed: int) -> list[JobRecord]:
    rng = random.Random(seed)
    statuses = [STARTING, INPROGRESS, COMPLETED, FAILED, STOPPED]
    records = [job(f"job-{rng.randrange(10**6):06d}-{i}", created=T0 + rng.randrange(40), status=rng.choice(statuses))
               for i in range(n)]
    for r in records:
        store.insert(r)
    return records


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("sort_by", sorted(SORT_COLUMNS))
def test_keyset_paging_returns_every_job_exactly_once_in_order(store, sort_by, descending):
    records = _many_jobs(store, 250, seed=1)
    q = ListQuery(sort_by=sort_by, descending=descending, limit=7)
    got = [j.name for j in all_pages(store, q)]
    assert got == [j.name for j in sorted(records, key=sort_key(q), reverse=descending)]


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("sort_by", sorted(SORT_COLUMNS))
def test_keyset_paging_has_no_duplicate_or_gap_while_jobs_are_created_between_pages(store, sort_by, descending):
    records = _many_jobs(store, 250, seed=2)
    rng, added = random.Random(3), []

    def create_one() -> None:  # lands before or after the cursor, at random
        added.append(job(f"new-{len(added):03d}", created=T0 + rng.randrange(-5, 45), status=rng.choice([STARTING, STOPPED])))
        store.insert(added[-1])

    q = ListQuery(sort_by=sort_by, descending=descending, limit=7)
    got = all_pages(store, q, between_pages=create_one)
    names = [j.name for j in got]
    assert len(added) > 30
    assert len(names) == len(set(names))
    assert {r.name for r in records} <= set(names)
    assert got == sorted(got, key=sort_key(q), reverse=descending)


def test_update_applies_changes_only_when_status_and_lease_holder_match(store):
    store.insert(job("a", status=INPROGRESS, worker="host:1", lease_expires=T0 + 30))
    assert store.update("a", when=[STARTING], status=STOPPED) is None
    assert store.update("a", when=[INPROGRESS], worker="host:2", lease_expires=T0 + 60) is None
    assert store.get("a").status == INPROGRESS and store.get("a").lease_expires == T0 + 30
    updated = store.update("a", when=[INPROGRESS, STOPPING], worker="host:1", lease_expires=T0 + 60, stage="compile: started")
    assert updated is not None and updated.lease_expires == T0 + 60 and updated.stage == "compile: started"
    assert store.get("a") == updated
    final = store.update("a", status=COMPLETED, end_time=T0 + 99, tags={"x": "y"}, worker=None)
    assert final.status == COMPLETED and final.end_time == T0 + 99 and final.tags == {"x": "y"}
    assert store.get("a") == final
    assert store.update("missing", status=FAILED) is None


def test_delete_removes_a_job_and_its_events_only_in_the_given_statuses(store):
    store.insert(job("a", status=INPROGRESS))
    store.add_event("a", T0 + 1, "fetch", "started", "")
    assert store.delete("a", when=[COMPLETED, FAILED, STOPPED]) is False
    assert store.get("a") is not None and len(store.events("a")) == 1
    store.update("a", status=COMPLETED)
    assert store.delete("a", when=[COMPLETED, FAILED, STOPPED]) is True
    assert store.get("a") is None and store.events("a") == []
    assert store.delete("a", when=[COMPLETED]) is False


def test_claim_takes_the_oldest_starting_job_and_leases_it(store):
    store.insert(job("newer", created=T0 + 2))
    store.insert(job("b-oldest", created=T0))
    store.insert(job("a-oldest", created=T0))
    store.insert(job("older-but-stopped", created=T0 - 5, status=STOPPED))
    store.insert(job("older-but-running", created=T0 - 5, status=INPROGRESS))
    first = store.claim("host:7", 30, T0 + 100)
    assert first.name == "a-oldest" and first.status == INPROGRESS and first.worker == "host:7"
    assert first.lease_expires == T0 + 130 and first.attempts == 1 and first.last_modified_time == T0 + 100
    assert store.get("a-oldest") == first
    assert [store.claim("host:7", 30, T0 + 100).name for _ in range(2)] == ["b-oldest", "newer"]
    assert store.claim("host:7", 30, T0 + 100) is None


def _claim_all(store: JobStore, worker: str, start: threading.Event | None = None) -> list[str]:
    if start is not None:
        start.wait()
    names = []
    while (j := store.claim(worker, 30, time.time())) is not None:
        names.append(j.name)
    return names


def test_concurrent_claims_never_hand_out_a_job_twice(store):
    for i in range(60):
        store.insert(job(f"j{i:02d}", created=T0 + i))
    start, results = threading.Event(), {}
    threads = [threading.Thread(target=lambda w=w: results.__setitem__(w, _claim_all(store, w, start))) for w in "abcd"]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join()
    claimed = [n for names in results.values() for n in names]
    assert sorted(claimed) == [f"j{i:02d}" for i in range(60)]
    assert all(store.get(n).worker == w and store.get(n).attempts == 1 for w, names in results.items() for n in names)


def _claim_in_process(url: str, worker: str, start, out) -> None:
    store = open_store(url)
    out.put(("ready", worker))
    start.wait()
    out.put((worker, _claim_all(store, worker)))
    store.close()


def test_postgres_claims_from_two_processes_never_hand_out_a_job_twice(postgres_db, pg_store):
    for i in range(200):
        pg_store.insert(job(f"j{i:03d}", created=T0 + i))
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(postgres_db, w, start, out)) for w in ("p1", "p2")]
    for p in procs:
        p.start()
    for _ in procs:
        assert out.get(timeout=60)[0] == "ready"
    start.set()
    mine = _claim_all(pg_store, "parent")  # and this process's pool, all at once
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    claimed = mine + results["p1"] + results["p2"]
    assert sorted(claimed) == [f"j{i:03d}" for i in range(200)]
    print(f"\nclaims: parent {len(mine)}, p1 {len(results['p1'])}, p2 {len(results['p2'])}")


def test_expired_lists_running_jobs_whose_lease_ran_out(store):
    store.insert(job("running-late", status=INPROGRESS, lease_expires=T0 + 10))
    store.insert(job("stopping-late", status=STOPPING, lease_expires=T0 + 5))
    store.insert(job("running-exactly-now", status=INPROGRESS, lease_expires=T0 + 20))
    store.insert(job("running-fine", status=INPROGRESS, lease_expires=T0 + 50))
    store.insert(job("done-late", status=COMPLETED, lease_expires=T0 + 1))
    store.insert(job("queued", status=STARTING))
    assert sorted(j.name for j in store.expired(T0 + 20)) == ["running-late", "stopping-late"]
    assert store.expired(T0) == []


def test_events_are_kept_in_order_and_the_latest_is_the_stage_line(store):
    store.insert(job("a"))
    store.insert(job("b"))
    store.add_event("a", T0 + 1, "fetch", "started", "")
    store.add_event("b", T0 + 1.5, "fetch", "started", "")
    store.add_event("a", T0 + 2, "fetch", "done", "in 0.4 s")
    store.add_event("a", T0 + 2, "compile", "started", "x" * 2000)
    events = store.events("a")
    assert events[:2] == [{"Time": T0 + 1, "Stage": "fetch", "Status": "started", "Detail": ""},
                          {"Time": T0 + 2, "Stage": "fetch", "Status": "done", "Detail": "in 0.4 s"}]
    assert len(events) == 3 and events[2]["Detail"] == "x" * 2000
    assert store.get("a").stage == ("compile: started (" + "x" * 2000)[:1024]
    assert store.get("b").stage == "fetch: started"
    store.add_event("a", T0 + 3, "compile", "done", "")
    assert store.get("a").stage == "compile: done"
    assert store.events("missing") == []


def test_secret_is_created_once_and_shared_by_every_store_instance(store_url):
    first, second = open_store(store_url), open_store(store_url)
    try:
        key = first.secret()
        assert isinstance(key, bytes) and len(key) == 32
        assert second.secret() == key and first.secret() == key
    finally:
        first.close()
        second.close()


def test_secret_race_between_new_stores_yields_one_key(store_url):
    stores = [open_store(store_url) for _ in range(4)]
    barrier, keys = threading.Barrier(4), []

    def read(s: JobStore) -> None:
        barrier.wait()
        keys.append(s.secret())

    threads = [threading.Thread(target=read, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert len(keys) == 4 and len(set(keys)) == 1


# serve_jobs: the default polling loop (SQLite) and Procrastinate's LISTEN/NOTIFY worker (PostgreSQL) keep one contract.

class Served:
    """serve_jobs in a thread; the handler records each job and the time it arrived, and waits for ``release``."""

    def __init__(self, store: JobStore, lease_seconds: float = 30):
        self.store, self.jobs, self.arrived = store, [], threading.Event()
        self.stop, self.release = threading.Event(), threading.Event()
        self.release.set()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, args=(lease_seconds,), daemon=True)
        self.thread.start()

    def _serve(self, lease_seconds: float) -> None:
        try:
            self.store.serve_jobs("host:42", lease_seconds, self._handle, self.stop)
        except BaseException as exc:  # surfaced by the test through .error
            self.error = exc

    def _handle(self, j: JobRecord) -> None:
        self.jobs.append((time.monotonic(), j))
        self.arrived.set()
        while not self.release.wait(0.02) and not self.stop.is_set():
            pass

    def wait_for(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.jobs) < count and time.monotonic() < deadline and self.error is None:
            time.sleep(0.005)
        assert self.error is None, self.error
        assert len(self.jobs) >= count, f"only {len(self.jobs)} of {count} jobs delivered"

    def shut(self, within: float = 10.0) -> float:  # returns at all (speed is not asserted: a loaded CI machine)
        began = time.monotonic()
        self.stop.set()
        self.thread.join(timeout=10)
        took = time.monotonic() - began
        assert not self.thread.is_alive(), "serve_jobs did not return after stop"
        assert self.error is None, self.error
        assert took < within, f"serve_jobs returned {took:.2f} s after stop"
        return took


def create(store: JobStore, name: str, **fields) -> None:
    """What the domain does on CreateCompilationJob: insert, then tell the queue."""
    store.insert(job(name, created=time.time(), **fields))
    store.enqueue(name)


def test_serve_jobs_delivers_each_queued_job_to_the_handler(store, store_url):
    """Delivery, not its speed: pick-up latency is measured by `make bench` (bench/service.py), not asserted here."""
    served = Served(store)
    try:
        create(store, "warm-up")  # delivered once the worker is up: from here on the worker is listening
        served.wait_for(1)
        latencies = []
        for i in range(5):
            began = time.monotonic()
            create(store, f"job-{i}")
            served.wait_for(2 + i)
            latencies.append(served.jobs[-1][0] - began)
        j = served.jobs[-1][1]
        assert j.name == "job-4" and j.status == INPROGRESS and j.worker == "host:42" and j.attempts == 1
        assert store.get("job-4").status == INPROGRESS
        kind = "postgres" if store_url.startswith("postgresql://") else "sqlite"
        print(f"\n{kind}: pick-up latency (create+enqueue -> handler) "
              f"min {min(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    finally:
        served.shut()


def test_serve_jobs_takes_jobs_created_while_no_worker_ran(store):
    for i in range(3):
        create(store, f"early-{i}")
    store.enqueue("early-0")  # told twice while queued: still taken once
    served = Served(store)
    try:
        served.wait_for(3)
        time.sleep(0.3)
        assert sorted(j.name for _, j in served.jobs) == ["early-0", "early-1", "early-2"]
    finally:
        served.shut()


def test_serve_jobs_skips_a_job_that_is_no_longer_starting(store):
    create(store, "stopped-before-pickup")
    store.update("stopped-before-pickup", when=[STARTING], status=STOPPED)
    create(store, "deleted-before-pickup")
    assert store.delete("deleted-before-pickup", when=[STARTING])
    served = Served(store)
    try:
        create(store, "wanted")
        served.wait_for(1)
        time.sleep(0.3)
        assert [j.name for _, j in served.jobs] == ["wanted"]
        assert store.get("stopped-before-pickup").status == STOPPED and store.get("stopped-before-pickup").attempts == 0
    finally:
        served.shut()


def test_serve_jobs_takes_a_job_again_when_recovery_queues_it_again(store):
    served = Served(store)
    try:
        create(store, "lost")
        store.enqueue("lost")  # a second enqueue (queued or already taken) never delivers the job twice
        served.wait_for(1)
        # What jobs.recover does once the lease ran out: back to STARTING, and into the queue again.
        assert store.update("lost", when=[INPROGRESS], status=STARTING, worker=None, lease_expires=None)
        store.enqueue("lost")
        served.wait_for(2)
        assert [j.name for _, j in served.jobs] == ["lost", "lost"] and served.jobs[1][1].attempts == 2
        time.sleep(0.3)
        assert len(served.jobs) == 2
    finally:
        served.shut()


def test_serve_jobs_returns_soon_after_stop_when_idle_and_while_a_job_runs(store):
    served = Served(store)
    time.sleep(0.5)
    took_idle = served.shut()
    served = Served(store)
    served.release.clear()  # the handler runs until stop, like a compile that watches for it
    create(store, "long")
    served.wait_for(1)
    took_busy = served.shut()
    print(f"\nserve_jobs returned {took_idle * 1000:.0f} ms after stop when idle, {took_busy * 1000:.0f} ms while a job ran")


def test_postgres_stores_starting_at_once_on_a_fresh_database_create_the_schema_once(postgres_db):
    barrier, stores, errors = threading.Barrier(4), [], []

    def start() -> None:
        barrier.wait()
        try:
            stores.append(open_store(postgres_db))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(stores) == 4
        stores[0].insert(job("a"))
        stores[3].enqueue("a")
        assert stores[2].get("a") is not None
    finally:
        for s in stores:
            s.close()


def test_kinds_are_separate_namespaces(store):
    """A compilation job, a transform job and a model may share a name (as in SageMaker); each kind lists alone."""
    for kind in ("compilation", "transform", "model"):
        store.insert(job("shared", kind=kind, status="" if kind == "model" else STARTING))
    with pytest.raises(NameTaken):
        store.insert(job("shared", kind="transform"))
    assert [j.kind for j in store.query(ListQuery(kind="transform"))] == ["transform"]
    assert store.get("shared", "model").status == "" and store.get("shared").kind == "compilation"
    assert store.update("shared", kind="transform", status=STOPPED).kind == "transform"
    assert store.get("shared").status == STARTING
    store.add_event("shared", T0, "fetch", "start", "", kind="transform")
    assert store.events("shared") == [] and len(store.events("shared", "transform")) == 1
    taken = store.claim("w", 10, T0)
    assert (taken.kind, taken.status) == ("compilation", INPROGRESS) and store.claim("w", 10, T0) is None  # models never
    assert store.query(ListQuery(kind="transform", status=(STOPPED, FAILED)))[0].name == "shared"
    assert store.delete("shared", [""], kind="model") and store.get("shared", "model") is None
    assert store.get("shared", "transform") is not None


def test_a_database_that_is_not_utf8_is_refused_with_a_clear_error(postgres_url):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DROP DATABASE IF EXISTS ascii_store")
        db.execute("CREATE DATABASE ascii_store ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    with pytest.raises(ValueError, match="is SQL_ASCII; neocompile needs a UTF8 database"):
        open_store(postgres_url.rsplit("/", 1)[0] + "/ascii_store")
