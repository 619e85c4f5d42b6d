"""The benchmark's job-service section: the API's latency under load and how fast an idle worker takes a job.

For each job store (``sqlite``: ``neocompile serve --workers 0 --data-dir TMP``; ``postgres``: the same server on a
throwaway PostgreSQL cluster started by tests/service/pg.py) a real server process is started and 1,000 jobs are
created through boto3 (a model URI that does not exist: without workers they stay STARTING). Then 8 clients, each
its own process with its own boto3 client (no retries), call DescribeCompilationJob on random jobs for ``seconds``,
then ListCompilationJobs with MaxResults=100, each walking all pages (NextToken) of one sort/filter variant after
another; every call's wall time as the client sees it (request, server, botocore's parsing) is kept and reported as
p50/p90/p99/max in ms, with the CPU the server and the clients spent per call. A single client's sequential calls
are measured too, to tell concurrency from per-call cost. Processes, not threads: botocore's parsing of a 100-job page
costs about twice the server's CPU, and 8 clients sharing one interpreter's GIL measured that queue, not the server.

Pick-up: a server with ``--workers 1`` on a fresh store; once its worker waits, jobs with a real model
(examples/model.tar.gz as a file:// URI) are created one at a time. Pick-up is CompilationStartTime (set by the worker
as it starts the compile) minus the time just before the Create call; Describe is polled every 10 ms, which also
gives the first moment a client saw INPROGRESS. Each job is stopped (StopCompilationJob) once it started, and the
next is created after it is STOPPED plus a random pause (so the SQLite worker's poll phase varies).

``python -m bench.service [--quick] [--modes sqlite,postgres] RESULT.json`` runs it alone; bench.py calls :func:`run`.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODES = ("sqlite", "postgres")
JOBS = 1000
CLIENTS = 8
PAGE = 100
#: The issue's goals, in ms.
GOALS = {"describe_p99_ms": 50.0, "list_p99_ms": 150.0, "pickup_median_ms": 1000.0}
EXAMPLE = ROOT / "examples" / "model.tar.gz"
DATA_CONFIG = '{"data":[1,3,64,64]}'
#: ListCompilationJobs variants the client threads walk, page by page (every one sees all 1,000 jobs but the last).
LIST_VARIANTS: list[dict[str, Any]] = [
    {"SortBy": "CreationTime", "SortOrder": "Ascending"},
    {"SortBy": "CreationTime", "SortOrder": "Descending"},
    {"SortBy": "Name", "SortOrder": "Ascending"},
    {"SortBy": "Name", "SortOrder": "Descending"},
    {"SortBy": "Status", "SortOrder": "Ascending"},
    {"SortBy": "CreationTime", "SortOrder": "Descending", "StatusEquals": "STARTING"},
    {"SortBy": "Name", "SortOrder": "Ascending", "NameContains": "-05"},  # a substring filter: 100 of 1,000 match
]


def log(text: str) -> None:
    print(f"bench: service: {text}", flush=True)


def percentiles(values_s: list[float]) -> dict[str, Any]:
    """p50/p90/p99/max in ms (linear interpolation between order statistics, as numpy's default), and the count."""
    xs = sorted(values_s)
    if not xs:
        return {"calls": 0}

    def q(p: float) -> float:
        k = (len(xs) - 1) * p
        lo = int(k)
        hi = min(lo + 1, len(xs) - 1)
        return (xs[lo] + (xs[hi] - xs[lo]) * (k - lo)) * 1e3

    return {"calls": len(xs), "p50_ms": round(q(0.5), 2), "p90_ms": round(q(0.9), 2), "p99_ms": round(q(0.99), 2),
            "max_ms": round(xs[-1] * 1e3, 2), "mean_ms": round(sum(xs) / len(xs) * 1e3, 2)}


def _clients(api, n: int) -> list:
    # boto3's default session is not thread-safe: make the clients here, use each from one thread.
    return [api.client() for _ in range(n)]


def _request(i: int, model_uri: str, output: str) -> dict[str, Any]:
    from tests.service.apiserver import ROLE

    return {"CompilationJobName": f"bench-{i:04d}", "RoleArn": ROLE,
            "InputConfig": {"S3Uri": model_uri, "Framework": "ONNX", "DataInputConfig": DATA_CONFIG},
            "OutputConfig": {"S3OutputLocation": output, "TargetDevice": "ml_c4"},
            "StoppingCondition": {"MaxRuntimeInSeconds": 900},
            "Tags": [{"Key": "bench", "Value": "service"}]}


def create_jobs(api, n: int, tmp: Path) -> dict[str, Any]:
    """``n`` jobs that never run (no workers; the model does not exist), created by CLIENTS threads."""
    clients = _clients(api, CLIENTS)
    missing = f"file://{tmp}/no-such-model.tar.gz"
    output = f"file://{tmp}/out"
    times: list[float] = []

    def one(i: int) -> None:
        client = clients[i % CLIENTS]
        t = time.perf_counter()
        client.create_compilation_job(**_request(i, missing, output))
        times.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(n)))
    return {"jobs": n, "seconds": round(time.perf_counter() - t0, 2), "latency": percentiles(times)}


def _describe_call(client, state: dict[str, Any]) -> dict[str, Any]:
    name = state["rng"].choice(state["names"])
    d = client.describe_compilation_job(CompilationJobName=name)
    if d["CompilationJobName"] != name:
        raise AssertionError(f"Describe {name} answered {d['CompilationJobName']}")
    return {}


def _list_call(client, state: dict[str, Any]) -> dict[str, Any]:
    """One page of a walk through all pages of one variant; the next call continues it, then walks the next variant."""
    if "variant" not in state:
        state["variant"], state["token"] = state["rng"].randrange(len(LIST_VARIANTS)), None
    kwargs = dict(LIST_VARIANTS[state["variant"]], MaxResults=PAGE)
    if state["token"]:
        kwargs["NextToken"] = state["token"]
    page = client.list_compilation_jobs(**kwargs)
    if len(page["CompilationJobSummaries"]) not in range(1, PAGE + 1):
        raise AssertionError(f"a List page of {len(page['CompilationJobSummaries'])} jobs ({kwargs})")
    tags = {"variant": state["variant"], "page": "later" if state["token"] else "first"}
    state["token"] = page.get("NextToken")
    if not state["token"]:
        state["variant"] = (state["variant"] + 1) % len(LIST_VARIANTS)
    return tags


CALLS = {"describe": _describe_call, "list": _list_call}


def _client_process(url: str, kind: str, names: list[str], index: int, warmup: int, seconds: float, barrier,
                    results) -> None:
    """One client: its own boto3 client in its own process (8 clients in one process would measure the GIL: botocore's
    parsing of a 100-job page costs more CPU than the server's answer), ``warmup`` untimed calls, then timed calls
    until ``seconds`` after every client is ready."""
    import boto3
    from botocore.config import Config

    from tests.service.apiserver import REGION

    try:
        client = boto3.client("sagemaker", endpoint_url=url, region_name=REGION, aws_access_key_id="AKIDBENCH",
                              aws_secret_access_key="not-checked",
                              config=Config(retries={"max_attempts": 1, "mode": "standard"}))
        call = CALLS[kind]
        state: dict[str, Any] = {"rng": random.Random(index), "names": names}
        # The wire time of a call: request sent (signed, serialized) -> response read, before botocore parses it.
        marks: dict[str, float] = {}
        client.meta.events.register("before-send.sagemaker", lambda **_: marks.__setitem__("send", time.perf_counter()))
        client.meta.events.register("before-parse.sagemaker", lambda **_: marks.__setitem__("parse", time.perf_counter()))
        for _ in range(warmup):
            call(client, state)
        error = None
    except BaseException as exc:  # noqa: BLE001  (reported by the parent, after the barrier)
        error = f"{type(exc).__name__}: {exc}"
    barrier.wait()
    rows: list[tuple[float, float, dict[str, Any]]] = []
    cpu0 = time.process_time()
    end = time.perf_counter() + seconds
    try:
        while error is None and time.perf_counter() < end:
            t = time.perf_counter()
            tags = call(client, state)
            rows.append((time.perf_counter() - t, marks["parse"] - marks["send"], tags))
    except BaseException as exc:  # noqa: BLE001
        error = f"{type(exc).__name__}: {exc}"
    results.put({"rows": rows, "cpu_s": time.process_time() - cpu0, "error": error})


def concurrent_calls(api, kind: str, clients: int, seconds: float, names: list[str] | None = None,
                     warmup: int = 5) -> dict[str, Any]:
    """``clients`` client processes calling ``kind`` for ``seconds`` together: every call's seconds (with the call's
    tags), calls per second, and the CPU the server and the clients spent per call."""
    import multiprocessing

    import psutil

    # Fresh interpreters, not forks: a forked client inherits its parent's heap (bench.py has TVM loaded), and its
    # first full garbage collection walks and copies all of it, stalling every client for seconds at once.
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(clients + 1), ctx.Queue()
    procs = [ctx.Process(target=_client_process, args=(api.url, kind, names or [], i, warmup, seconds, barrier, results),
                         daemon=True) for i in range(clients)]
    for p in procs:
        p.start()
    server = psutil.Process(api.proc.pid)
    barrier.wait(timeout=120)
    t0, cpu0 = time.perf_counter(), sum(server.cpu_times()[:2])
    got = [results.get(timeout=seconds + 120) for _ in procs]  # before join: a child exits once its result is read
    wall, server_s = time.perf_counter() - t0, sum(server.cpu_times()[:2]) - cpu0
    for p in procs:
        p.join(30)
    errors = [g["error"] for g in got if g["error"]]
    if errors:
        raise RuntimeError(f"{len(errors)} of {clients} {kind} clients failed; first: {errors[0]}")
    rows = [r for g in got for r in g["rows"]]
    n = max(len(rows), 1)
    return {"rows": rows, "times": [t for t, _, _ in rows], "wire": [w for _, w, _ in rows], "wall": wall,
            "calls_per_s": round(len(rows) / wall, 1), "server_cpu_ms_per_call": round(server_s / n * 1e3, 2),
            "client_cpu_ms_per_call": round(sum(g["cpu_s"] for g in got) / n * 1e3, 2)}


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    return {**percentiles(run["times"]), "wire": percentiles(run["wire"]), "calls_per_s": run["calls_per_s"],
            "seconds": round(run["wall"], 2),
            "server_cpu_ms_per_call": run["server_cpu_ms_per_call"], "client_cpu_ms_per_call": run["client_cpu_ms_per_call"]}


def describe_phase(api, names: list[str], seconds: float) -> dict[str, Any]:
    # One client alone first: the per-call cost without contention.
    alone = concurrent_calls(api, "describe", 1, min(2.0, seconds / 4), names)
    loaded = concurrent_calls(api, "describe", CLIENTS, seconds, names)
    return {**_summary(loaded), "one_client": _summary(alone)}


def list_phase(api, seconds: float) -> dict[str, Any]:
    alone = concurrent_calls(api, "list", 1, min(2.0, seconds / 4))
    loaded = concurrent_calls(api, "list", CLIENTS, seconds)
    rows = loaded["rows"]
    return {**_summary(loaded), "one_client": _summary(alone), "page_size": PAGE,
            "first_page": percentiles([t for t, _, tags in rows if tags["page"] == "first"]),
            "later_pages": percentiles([t for t, _, tags in rows if tags["page"] == "later"]),
            "variants": [{"request": v, **percentiles([t for t, _, tags in rows if tags["variant"] == i])}
                         for i, v in enumerate(LIST_VARIANTS)]}


def _wait_for_log(api, text: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while text not in api.log():
        if time.monotonic() > end:
            raise RuntimeError(f"the server's log never said {text!r} within {timeout:g} s:\n{api.log()[-3000:]}")
        time.sleep(0.05)


def pickup_phase(api, jobs: int, tmp: Path, ready: str) -> dict[str, Any]:
    """Create real jobs one at a time on an idle worker; how soon each one's compile starts."""
    client = api.client()
    # A boto3 client's first call of an operation builds its request machinery (~0.1 s): not the service's time.
    client.list_compilation_jobs(MaxResults=1)
    try:
        client.create_compilation_job(**{**_request(0, f"file://{EXAMPLE}", f"file://{tmp}/x"), "CompilationJobName": "-"})
    except client.exceptions.ClientError:
        pass  # ValidationException (the name), as intended
    _wait_for_log(api, ready, 60)
    time.sleep(1.0)
    rows = []
    for i in range(jobs):
        time.sleep(random.Random(i).uniform(0.3, 0.8))
        name = f"pickup-{i}"
        request = _request(i, f"file://{EXAMPLE}", f"file://{tmp}/pickup-out-{i}")
        request["CompilationJobName"] = name
        t0 = time.time()
        client.create_compilation_job(**request)
        t_created = time.time()
        seen_inprogress = None
        end = time.monotonic() + 60
        while True:
            d = client.describe_compilation_job(CompilationJobName=name)
            status = d["CompilationJobStatus"]
            if status != "STARTING" and seen_inprogress is None:
                seen_inprogress = time.time()
            if "CompilationStartTime" in d or status not in ("STARTING", "INPROGRESS"):
                break
            if time.monotonic() > end:
                raise RuntimeError(f"job {name} not started within 60 s ({status}):\n{api.log()[-3000:]}")
            time.sleep(0.01)
        start = d.get("CompilationStartTime")
        row = {"job": name, "create_call_ms": round((t_created - t0) * 1e3, 1),
               "pickup_ms": round((start.timestamp() - t0) * 1e3, 1) if start else None,
               "first_inprogress_seen_ms": round((seen_inprogress - t0) * 1e3, 1) if seen_inprogress else None,
               "status_at_start": status}
        if status in ("STARTING", "INPROGRESS"):
            client.stop_compilation_job(CompilationJobName=name)
        end = time.monotonic() + 60
        while (status := client.describe_compilation_job(CompilationJobName=name)["CompilationJobStatus"]) \
                not in ("STOPPED", "COMPLETED", "FAILED"):
            if time.monotonic() > end:
                raise RuntimeError(f"job {name} still {status} 60 s after StopCompilationJob:\n{api.log()[-3000:]}")
            time.sleep(0.05)
        row["final_status"] = status
        rows.append(row)
        log(f"  pick-up {name}: compile started {row['pickup_ms']} ms after Create, INPROGRESS seen after "
            f"{row['first_inprogress_seen_ms']} ms ({status})")
    picked = sorted(r["pickup_ms"] for r in rows if r["pickup_ms"] is not None)
    seen = sorted(r["first_inprogress_seen_ms"] for r in rows if r["first_inprogress_seen_ms"] is not None)
    return {"jobs": rows, "median_ms": _median(picked), "max_ms": picked[-1] if picked else None,
            "first_inprogress_seen_median_ms": _median(seen)}


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else round((xs[mid - 1] + xs[mid]) / 2, 1)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_mode(mode: str, seconds: float, pickups: int) -> dict[str, Any]:
    from tests.service.apiserver import ApiProcess

    started = time.monotonic()
    out: dict[str, Any] = {"mode": mode, "load_average_before": _load()}
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-service-{mode}-"))
    cluster = root = None
    try:
        if mode == "postgres":
            from tests.service import pg

            t = time.monotonic()
            cluster, root = pg.start_cluster()
            admin = cluster.url("postgres")
            pg.create_database(admin, "pickup")
            stores = {"load": cluster.url(), "pickup": cluster.url("pickup")}
            out["cluster_start_s"] = round(time.monotonic() - t, 2)
        else:
            stores = {"load": None, "pickup": None}

        api = ApiProcess(tmp / "load", store=stores["load"], workers=0).start()
        try:
            out["create"] = create_jobs(api, JOBS, tmp)
            log(f"{mode}: created {JOBS} jobs in {out['create']['seconds']:.1f} s (p50 "
                f"{out['create']['latency']['p50_ms']} ms with {CLIENTS} clients)")
            names = [f"bench-{i:04d}" for i in range(JOBS)]
            out["describe"] = describe_phase(api, names, seconds)
            log(f"{mode}: " + line("Describe", out["describe"]))
            out["list"] = list_phase(api, seconds)
            log(f"{mode}: " + line(f"List({PAGE})", out["list"]))
        finally:
            api.stop()
        api = ApiProcess(tmp / "pickup", store=stores["pickup"], workers=1).start()
        try:
            # The worker is waiting: its log line, then (PostgreSQL) Procrastinate's worker loop, LISTEN included.
            ready = "Starting worker on queues" if mode == "postgres" else "waiting for jobs"
            out["pickup"] = pickup_phase(api, pickups, tmp, ready)
        finally:
            api.stop()
        log(f"{mode}: pick-up median {out['pickup']['median_ms']} ms (INPROGRESS seen after "
            f"{out['pickup']['first_inprogress_seen_median_ms']} ms)")
    finally:
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    out["load_average_after"] = _load()
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def line(what: str, p: dict[str, Any]) -> str:
    return (f"{what} p50 {p['p50_ms']} / p90 {p['p90_ms']} / p99 {p['p99_ms']} / max {p['max_ms']} ms over "
            f"{p['calls']} calls ({p['calls_per_s']}/s, {CLIENTS} clients; on the wire p50 {p['wire']['p50_ms']} / p99 "
            f"{p['wire']['p99_ms']} ms; CPU per call: server "
            f"{p['server_cpu_ms_per_call']} ms, clients {p['client_cpu_ms_per_call']} ms)")


def run(quick: bool = False, modes: list[str] | None = None, seconds: float | None = None,
        pickups: int | None = None) -> dict[str, Any]:
    """The whole section: every mode, each in its own server (and cluster); a mode that fails records its error."""
    seconds = seconds or (4.0 if quick else 10.0)
    pickups = pickups or (3 if quick else 5)
    started = time.time()
    section: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "config": {"jobs": JOBS, "clients": CLIENTS, "seconds_per_phase": seconds, "page_size": PAGE,
                   "pickup_jobs": pickups, "quick": quick, "list_variants": LIST_VARIANTS},
        "goals_ms": GOALS, "modes": []}
    for mode in modes or MODES:
        log(f"{mode}: starting ({JOBS} jobs, {CLIENTS} clients, {seconds:g} s per phase, {pickups} pick-ups)")
        try:
            section["modes"].append(run_mode(mode, seconds, pickups))
        except Exception as exc:  # noqa: BLE001  (one mode failing must not lose the other)
            log(f"{mode}: FAILED: {type(exc).__name__}: {exc}")
            section["modes"].append({"mode": mode, "error": f"{type(exc).__name__}: {exc}"[:2000]})
    section["seconds"] = round(time.time() - started, 1)
    return section


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("result", help="where to write the section's JSON")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--seconds", type=float)
    p.add_argument("--pickups", type=int)
    args = p.parse_args(argv)
    section = run(args.quick, args.modes.split(","), args.seconds, args.pickups)
    Path(args.result).write_text(json.dumps(section, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
