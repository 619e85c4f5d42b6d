"""The benchmark's batch-transform section: records per second of a CSV file through an XGBoost package, against
``xgboost`` scoring the same file in one process, and the worker's peak memory for two file sizes.

The data: ``rows`` CSV lines of ``features`` standard-normal values rounded to 4 decimals (no header, no id column, no
missing values; about 150 bytes a line), written in chunks (never held whole) and cached under ``bench/work/``. The
model: 100 trees of depth 6, ``binary:logistic``, trained with xgboost on 20,000 rows of the same distribution (the
label a noisy non-linear function of the features), saved as JSON, packed as ``model.tar.gz`` and compiled with
``neocompile.compile_model(..., "XGBOOST")`` for ml_c5 (ml_c4 where this CPU cannot run ml_c5 code).

neocompile: for each thread count (1, and every usable core), a fresh ``neocompile serve --workers 1`` (SQLite store in
a temporary folder; ``NEOCOMPILE_NUM_THREADS`` set to the count, which the worker inherits) gets CreateModel (the
package as a ``file://`` ModelDataUrl) and CreateTransformJobs through boto3: the CSV file as a ``file://`` S3Prefix,
MultiRecord, MaxPayloadInMB 6, SplitType Line, ``text/csv`` in and out, AssembleWith Line, no DataProcessing. The
worker's first job (the first 1,000 rows) is timed apart: it imports the model runtime (TVM, which imports torch when
it is installed), seconds that a long-running worker pays once. Then the measured job on the whole file; Describe is
polled every 50 ms. Its time is TransformEndTime - TransformStartTime (set by the worker as it takes the job and as it
finishes: package fetch and load, read, split, invoke, write and the final copy of the ``.out`` included; the service
stores them in ms); ``create_to_completed_s`` is the client's wall time from just before CreateTransformJob to the
first Describe that says Completed. The worker's peak RSS is ``VmHWM`` of its own process (``/proc/<pid>/status``),
read after the job, next to its RSS before any job and after the first (fresh server per run, so the high-water mark
is this run's). Memory is measured for ``rows`` and ``rows / 4`` (the first quarter of the same file) with every
core: bounded memory means the same peak for both.

xgboost: the same CSV file read in one process with ``pandas.read_csv(header=None, dtype=float32)`` when pandas is
installed, else ``xgboost.DMatrix("file.csv?format=csv", nthread=N)``: xgboost's own text reader, deprecated since
3.1 and not correctly rounded (here about 1 value in 26 is 1 ulp off, and 1 prediction in 7,000 takes another
branch), but the fastest reader this environment has without pandas (``numpy.loadtxt``, exact, is about 4x slower).
Then ``inplace_predict`` (pandas) or ``predict`` (DMatrix) with ``nthread=N``; then the predictions written as a CSV,
one per line (``"\\n".join(map(repr, predictions.tolist()))``; numpy.savetxt is ~3x slower). Timed end to end in a
fresh process (interpreter start and ``import xgboost`` excluded; the booster is loaded before the clock starts), so
it has the file in the page cache exactly as the transform job does. neocompile's output is checked against
``inplace_predict`` on the first 20,000 rows read exactly (``numpy.loadtxt``), and compared with the baseline's.

The ratio is neocompile's TransformStart..End over xgboost's time (goal: at most 1.5). Every run also records the
CPU seconds its process used (worker: user + system, measured by psutil at the end of the job; xgboost: its own
``getrusage``) and the load average, because a busy machine stretches wall times.

``python bench/transform.py [--rows N] [--features F] [--json OUT]`` runs it alone and prints the table; bench.py
calls :func:`run` and :func:`render`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORK = ROOT / "bench" / "work" / "transform"
TREES, DEPTH = 100, 6
PAYLOAD_MB = 6
GOAL_RATIO = 1.5
CHUNK_ROWS = 50_000
POLL_S = 0.05
WARMUP_ROWS = 1000


def log(text: str) -> None:
    print(f"bench: transform: {text}", flush=True)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- data and model --------------------------------------------------------------------------------------------------

def _features(rng, rows: int, features: int):
    import numpy as np

    return np.round(rng.standard_normal((rows, features)), 4)


def make_csv(path: Path, rows: int, features: int, seed: int = 1) -> Path:
    """``rows`` lines of ``features`` values, generated and written ``CHUNK_ROWS`` at a time (cached)."""
    import numpy as np

    if path.exists():
        return path
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".part")
    with open(tmp, "w") as f:
        for start in range(0, rows, CHUNK_ROWS):
            chunk = _features(rng, min(CHUNK_ROWS, rows - start), features)
            f.write("".join(",".join(map(repr, row)) + "\n" for row in chunk.tolist()))
    tmp.rename(path)
    log(f"wrote {path.name}: {rows} rows x {features} features, {path.stat().st_size / 1e6:.0f} MB in "
        f"{time.monotonic() - started:.1f} s")
    return path


def head_csv(src: Path, dst: Path, rows: int) -> Path:
    """The first ``rows`` lines of ``src`` (streamed)."""
    if dst.exists():
        return dst
    tmp = dst.with_suffix(".part")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        for i, line in enumerate(fin):
            if i >= rows:
                break
            fout.write(line)
    tmp.rename(dst)
    return dst


def _target() -> str:
    from neocompile.targets import get_target

    return "ml_c5" if get_target("ml_c5").host_is_native() else "ml_c4"


def _compiler_digest() -> str:
    """A digest of neocompile's sources outside the job service, and of the xgboost version."""
    import hashlib

    import xgboost

    import neocompile

    source = Path(neocompile.__file__).parent
    h = hashlib.sha256(xgboost.__version__.encode())
    for f in sorted(source.rglob("*.py")):
        if "service" not in f.relative_to(source).parts:
            h.update(str(f.relative_to(source)).encode() + f.read_bytes())
    return h.hexdigest()[:12]


def make_model(folder: Path, features: int) -> dict[str, Any]:
    """Train the booster, pack it and compile it for this CPU (all cached in ``folder``)."""
    import numpy as np
    import xgboost

    import neocompile

    folder.mkdir(parents=True, exist_ok=True)
    model_json = folder / "xgboost-model.json"
    if not model_json.exists():
        rng = np.random.default_rng(0)
        x = _features(rng, 20_000, features)
        w = rng.standard_normal(features)
        signal = x @ w + 1.5 * np.sin(2 * x[:, 0]) * x[:, 1] - np.abs(x[:, 2]) + 0.5 * rng.standard_normal(len(x))
        y = (signal > np.median(signal)).astype(np.float32)
        params = {"objective": "binary:logistic", "max_depth": DEPTH, "eta": 0.1, "seed": 0, "nthread": cores()}
        booster = xgboost.train(params, xgboost.DMatrix(x.astype(np.float32), y), TREES)
        booster.save_model(str(model_json))
    target = _target()
    compiled = folder / f"compiled-{target}-{_compiler_digest()}"  # compiled again when the compiler changes
    packages = list(compiled.glob("*.tar.gz"))
    if not packages:
        for old in folder.glob("compiled-*"):
            shutil.rmtree(old, ignore_errors=True)
        with tarfile.open(folder / "model.tar.gz", "w:gz") as tar:
            tar.add(model_json, arcname="xgboost-model.json")
        started = time.monotonic()
        result = neocompile.compile_model(str(folder / "model.tar.gz"), "XGBOOST", str(compiled), target_device=target)
        log(f"compiled the XGBoost model for {target} in {time.monotonic() - started:.1f} s")
        packages = [Path(result.artifact_uri.removeprefix("file://"))]
    return {"json": model_json, "package": packages[0], "target": target}


# --- the xgboost baseline -------------------------------------------------------------------------------------------

def _baseline_main(csv: str, model_json: str, threads: int, out: str) -> None:
    """In a fresh process: read ``csv``, predict, write the predictions; print a JSON line of what it measured."""
    import resource

    import numpy as np
    import xgboost

    booster = xgboost.Booster(model_file=model_json)
    booster.set_param({"nthread": threads})
    try:
        import pandas
    except ImportError:
        pandas = None
    rusage0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if pandas is not None:
        reader = "pandas.read_csv(header=None, dtype=float32) + Booster.inplace_predict"
        x = pandas.read_csv(csv, header=None, dtype=np.float32).to_numpy()
        t1 = time.perf_counter()
        predictions = booster.inplace_predict(x)
    else:
        reader = "xgboost.DMatrix('file.csv?format=csv', nthread=N) + Booster.predict"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Text file input has been deprecated since 3.1"
            x = xgboost.DMatrix(f"{csv}?format=csv", nthread=threads)
        t1 = time.perf_counter()
        predictions = booster.predict(x)
    t2 = time.perf_counter()
    with open(out, "w") as f:
        f.write("\n".join(map(repr, predictions.tolist())))
        f.write("\n")
    t3 = time.perf_counter()
    rusage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"reader": reader, "rows": len(predictions), "read_s": round(t1 - t0, 3),
                      "predict_s": round(t2 - t1, 3), "write_s": round(t3 - t2, 3), "seconds": round(t3 - t0, 3),
                      "cpu_s": round(rusage.ru_utime + rusage.ru_stime - rusage0.ru_utime - rusage0.ru_stime, 2),
                      "peak_rss_mb": round(rusage.ru_maxrss / 1024, 1), "xgboost": xgboost.__version__}))


def baseline(csv: Path, model_json: Path, threads: int, out: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--baseline", str(csv), str(model_json), str(threads), str(out)],
                          capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the xgboost baseline failed: {done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["records_per_s"] = round(result["rows"] / result["seconds"])
    return result


# --- neocompile ------------------------------------------------------------------------------------------------------

def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _wait_for_log(api, text: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while text not in api.log():
        if time.monotonic() > end:
            raise RuntimeError(f"the server's log never said {text!r} within {timeout:g} s:\n{api.log()[-3000:]}")
        time.sleep(0.05)


def _job(client, name: str, csv: Path, out_dir: Path) -> tuple[dict[str, Any], float]:
    """CreateTransformJob of ``csv`` and Describe until it ends: (its last Describe, create->completed seconds)."""
    t0 = time.monotonic()
    client.create_transform_job(
        TransformJobName=name, ModelName="xgb", BatchStrategy="MultiRecord", MaxPayloadInMB=PAYLOAD_MB,
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": csv.as_uri()}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": out_dir.as_uri(), "Accept": "text/csv", "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
    while True:
        d = client.describe_transform_job(TransformJobName=name)
        if d["TransformJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        time.sleep(POLL_S)
    wall = time.monotonic() - t0
    if d["TransformJobStatus"] != "Completed":
        raise RuntimeError(f"transform job {name}: {d['TransformJobStatus']}: {d.get('FailureReason')}")
    return d, wall


def _span(d: dict[str, Any]) -> float:
    return (d["TransformEndTime"] - d["TransformStartTime"]).total_seconds()


def transform_job(package: Path, csv: Path, warmup: Path, threads: int, tmp: Path, name: str) -> dict[str, Any]:
    """One transform job of ``csv`` on a fresh server whose worker runs the model with ``threads`` threads, after a
    first job of ``warmup`` (a few rows: the worker's first job imports the model runtime)."""
    import psutil

    from tests.service.apiserver import ROLE, ApiProcess

    out_dir = tmp / f"out-{name}"
    api = ApiProcess(tmp / f"data-{name}", workers=1, env={"NEOCOMPILE_NUM_THREADS": str(threads)}).start()
    try:
        client = api.client()
        _wait_for_log(api, "waiting for jobs", 120)
        (pid,) = api.worker_pids()
        worker = psutil.Process(pid)
        idle_rss_kb = _status_kb(pid, "VmRSS")
        client.create_model(ModelName="xgb", ExecutionRoleArn=ROLE, PrimaryContainer={"ModelDataUrl": package.as_uri()})
        first, _ = _job(client, f"{name}-first", warmup, out_dir)
        warm_rss_kb = _status_kb(pid, "VmRSS")
        load_before = _load()
        cpu0 = sum(worker.cpu_times()[:2])
        d, wall = _job(client, name, csv, out_dir)
        cpu = sum(worker.cpu_times()[:2]) - cpu0
        peak_kb = _status_kb(pid, "VmHWM")
    finally:
        api.stop()
    return {"seconds": round(_span(d), 3), "create_to_completed_s": round(wall, 3),
            "worker_cpu_s": round(cpu, 2), "first_job_s": round(_span(first), 3),
            "worker_idle_rss_mb": round(idle_rss_kb / 1024, 1),
            "worker_rss_after_first_job_mb": round(warm_rss_kb / 1024, 1),
            "worker_peak_rss_mb": round(peak_kb / 1024, 1), "load_average_before": load_before,
            "output": out_dir / f"{csv.name}.out"}


EXACT_ROWS = 20_000


def _compare(output: Path, reference: Path, rows: int, csv: Path, model_json: Path) -> dict[str, Any]:
    """neocompile's predictions against the baseline's (all rows) and against xgboost's ``inplace_predict`` on the
    first EXACT_ROWS rows parsed exactly (``numpy.loadtxt``, as ``float``: xgboost's own CSV reader is not correctly
    rounded, so a value on a split threshold can take the other branch there)."""
    import numpy as np
    import xgboost

    a = np.loadtxt(output, dtype=np.float32)  # float32 written in its shortest form: read back exactly as float32
    b = np.loadtxt(reference, dtype=np.float32)
    if a.shape != (rows,) or b.shape != (rows,):
        raise RuntimeError(f"expected {rows} predictions; neocompile wrote {a.shape}, xgboost {b.shape}")
    n = min(rows, EXACT_ROWS)
    with open(csv, "rb") as f:
        x = np.loadtxt(f, dtype=np.float32, delimiter=",", max_rows=n, ndmin=2)
    exact = xgboost.Booster(model_file=str(model_json)).inplace_predict(x)
    return {"max_abs_diff_vs_baseline": float(np.abs(a - b).max()),
            "rows_differing_vs_baseline": int(np.count_nonzero(np.abs(a - b) > 1e-6)),
            "exact_check_rows": n, "max_abs_diff_exact": float(np.abs(a[:n] - exact).max())}


# --- the section -----------------------------------------------------------------------------------------------------

def run(rows: int = 1_000_000, features: int = 20, work: Path | None = None) -> dict:
    """Measure: per thread count (1, all cores), neocompile's transform and xgboost's baseline on the same CSV file;
    the worker's peak RSS for ``rows`` and ``rows // 4``. Returns a JSON-able dict (see the module's docstring)."""
    import numpy as np
    import xgboost

    started = time.time()
    work = Path(work) if work is not None else WORK
    work.mkdir(parents=True, exist_ok=True)
    model = make_model(work / f"model-{features}f", features)
    csv = make_csv(work / f"data-{rows}x{features}.csv", rows, features)
    quarter_rows = max(1, rows // 4)
    quarter = head_csv(csv, work / f"data-{rows}x{features}-first-{quarter_rows}.csv", quarter_rows)
    warmup = head_csv(csv, work / f"data-{rows}x{features}-first-{WARMUP_ROWS}.csv", min(rows, WARMUP_ROWS))
    counts = [1] if cores() == 1 else [1, cores()]
    section: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "config": {"rows": rows, "features": features, "csv_mb": round(csv.stat().st_size / 1e6, 1),
                   "trees": TREES, "depth": DEPTH, "objective": "binary:logistic", "target": model["target"],
                   "batch_strategy": "MultiRecord", "max_payload_mb": PAYLOAD_MB, "split_type": "Line",
                   "content_type": "text/csv", "accept": "text/csv", "cores": cores(),
                   "numpy": np.__version__, "xgboost": xgboost.__version__},
        "goal_ratio": GOAL_RATIO, "threads": [], "memory": []}
    tmp = Path(tempfile.mkdtemp(prefix="bench-transform-", dir=work))
    try:
        for threads in counts:
            ref = tmp / f"xgboost-{threads}.csv"
            base = baseline(csv, model["json"], threads, ref)
            log(f"{threads} thread(s): xgboost {base['records_per_s']:,} records/s ({base['seconds']:.2f} s: read "
                f"{base['read_s']:.2f}, predict {base['predict_s']:.2f}, write {base['write_s']:.2f}; "
                f"{base['reader']})")
            job = transform_job(model["package"], csv, warmup, threads, tmp, f"bench-{threads}t")
            output = job.pop("output")
            check = _compare(output, ref, rows, csv, model["json"])
            output.unlink()
            ratio = job["seconds"] / base["seconds"]
            row = {"threads": threads, "neocompile": {**job, "records_per_s": round(rows / job["seconds"])},
                   "xgboost": base, "ratio": round(ratio, 2), "meets_goal": ratio <= GOAL_RATIO, "check": check}
            section["threads"].append(row)
            log(f"{threads} thread(s): neocompile {row['neocompile']['records_per_s']:,} records/s "
                f"({job['seconds']:.2f} s; create->completed {job['create_to_completed_s']:.2f} s; worker CPU "
                f"{job['worker_cpu_s']:.1f} s; the worker's first job {job['first_job_s']:.2f} s; peak RSS "
                f"{job['worker_peak_rss_mb']} MB): {ratio:.2f}x xgboost's time; {check}")
        # Memory: the same job with every core on a quarter of the file; the full file's run is the row above.
        full = section["threads"][-1]["neocompile"]
        keys = ("worker_idle_rss_mb", "worker_rss_after_first_job_mb", "worker_peak_rss_mb")
        section["memory"].append({"rows": rows, "threads": counts[-1], **{k: full[k] for k in keys}})
        job = transform_job(model["package"], quarter, warmup, counts[-1], tmp, "bench-quarter")
        job.pop("output").unlink()
        section["memory"].insert(0, {"rows": quarter_rows, "threads": counts[-1], **{k: job[k] for k in keys}})
        growth = full["worker_peak_rss_mb"] - job["worker_peak_rss_mb"]
        section["memory_growth_mb"] = round(growth, 1)
        log(f"worker peak RSS: {quarter_rows} rows {job['worker_peak_rss_mb']} MB, {rows} rows "
            f"{full['worker_peak_rss_mb']} MB (idle {full['worker_idle_rss_mb']} MB)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    section["meets_goal"] = all(r["meets_goal"] for r in section["threads"])
    section["load_average_after"] = _load()
    section["seconds"] = round(time.time() - started, 1)
    return section


def render(result: dict) -> str:
    """The section as markdown: one row per thread count, the memory rows, how it was measured."""
    cfg = result["config"]
    lines = [
        (f"Batch transform (`neocompile serve`, bench/transform.py; goal: within 1.5x of xgboost, memory independent "
         f"of the file size): {cfg['rows']:,} CSV rows x {cfg['features']} features ({cfg['csv_mb']} MB), XGBoost {cfg['trees']} trees "
         f"depth {cfg['depth']} compiled for {cfg['target']}; {cfg['batch_strategy']}, MaxPayloadInMB "
         f"{cfg['max_payload_mb']}, SplitType {cfg['split_type']}, {cfg['content_type']} in and out."),
        "",
        ("| threads | neocompile records/s | job s | create->completed s | worker CPU s | xgboost records/s "
         "| xgboost s (read + predict + write) | xgboost CPU s | ratio | goal <= "
         f"{result['goal_ratio']:g}x |"),
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in result["threads"]:
        n, x = r["neocompile"], r["xgboost"]
        lines.append(f"| {r['threads']} | {n['records_per_s']:,} | {n['seconds']:.2f} "
                     f"| {n['create_to_completed_s']:.2f} | {n['worker_cpu_s']:.1f} | {x['records_per_s']:,} "
                     f"| {x['seconds']:.2f} ({x['read_s']:.2f} + {x['predict_s']:.2f} + {x['write_s']:.2f}) "
                     f"| {x['cpu_s']:.1f} | {r['ratio']:.2f}x | {'met' if r['meets_goal'] else 'missed'} |")
    lines += ["", "| rows | worker RSS idle MB | after its first job MB | peak (VmHWM) MB |", "|---:|---:|---:|---:|"]
    for m in result["memory"]:
        lines.append(f"| {m['rows']:,} | {m['worker_idle_rss_mb']} | {m['worker_rss_after_first_job_mb']} "
                     f"| {m['worker_peak_rss_mb']} |")
    rows = result["threads"]
    reader = rows[0]["xgboost"]["reader"] if rows else "?"
    first = ", ".join(f"{r['neocompile']['first_job_s']:.1f} s" for r in rows)
    exact = max((r["check"]["max_abs_diff_exact"] for r in rows), default=0.0)
    off = max((r["check"]["rows_differing_vs_baseline"] for r in rows), default=0)
    lines += [
        "",
        (f"neocompile: a fresh `neocompile serve --workers 1` per run (NEOCOMPILE_NUM_THREADS = threads); through "
         f"boto3, CreateModel and, on `file://` URIs, a first transform job of {WARMUP_ROWS:,} rows (a worker's first "
         f"job imports the model runtime: {first}), then the measured one. Job s = TransformEndTime - "
         f"TransformStartTime (package fetch and load, read, split, invoke, write, storing the `.out`); "
         f"create->completed is the client's wall time (Describe every {POLL_S * 1000:g} ms). xgboost: the same CSV "
         f"file in one fresh process, {reader}, nthread = threads, predictions written to a CSV, timed from the read "
         f"to the written file (booster loaded before). Ratio = neocompile job s / xgboost s. Memory: the worker "
         f"process's VmHWM on a fresh server per size, every core, the smaller file being the first quarter of the "
         f"larger: {result.get('memory_growth_mb', 0):+g} MB between them. neocompile's predictions equal xgboost's "
         f"inplace_predict on exactly parsed rows within {exact:.2g} (first "
         f"{rows[0]['check']['exact_check_rows'] if rows else 0:,} rows); {off:,} differ from the baseline's, whose "
         f"CSV reader is not correctly rounded. {cfg['cores']} usable core(s); load average "
         f"{rows[0]['neocompile']['load_average_before'][0] if rows else '?'} before the first measured job, "
         f"{result['load_average_after'][0]} at the end; the section took {result['seconds']:.0f} s."),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--baseline"]:
        _baseline_main(argv[1], argv[2], int(argv[3]), argv[4])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--work", type=Path, help=f"where the data, model and package are cached (default {WORK})")
    p.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = p.parse_args(argv)
    result = run(args.rows, args.features, args.work)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(render(result))


if __name__ == "__main__":
    main()
