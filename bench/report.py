"""The benchmark's summaries, goals, chart (bench/results.png) and README section, all read from results.json."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
VARIANTS = ["neocompile", "neocompile-tvm-default", "neocompile-tuned"]
RUNTIMES = VARIANTS + ["onnxruntime", "torch"]
LABELS = {"neocompile": "neocompile", "neocompile-tvm-default": "TVM default schedules",
          "neocompile-tuned": "neocompile tuned", "onnxruntime": "onnxruntime", "torch": "torch"}
STAGES = ("fetch", "extract", "load", "compile", "verify", "package", "upload")
GiB = 2**30


def ms(row: dict[str, Any], runtime: str) -> float | None:
    return (row["results"].get(runtime) or {}).get("median_ms")


def ratio(row: dict[str, Any], runtime: str) -> float | None:
    value, ort = ms(row, runtime), ms(row, "onnxruntime")
    return value / ort if value is not None and ort else None


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _label(model: str) -> str:
    from bench.models import MODELS

    return MODELS[model].title if model in MODELS else model


def latency_line(row: dict[str, Any]) -> str:
    parts = []
    for runtime in RUNTIMES:
        entry = row["results"].get(runtime)
        if entry is None:
            continue
        parts.append(f"{runtime} {_fmt_ms(entry['median_ms'])} ms" if "median_ms" in entry else f"{runtime} ERROR {entry.get('error')}")
    if "error" in row["results"] and not parts:
        parts.append(f"ERROR {row['results']['error']}")
    return f"{row['model']} b{row['batch']} {row['threads']} thread(s): " + ", ".join(parts)


def _package_names(row: dict[str, Any]) -> list[str]:
    return list(row.get("compiles") or {})


def framework_line(row: dict[str, Any]) -> str:
    """One framework source's timings in the log: each package, then its baselines."""
    res = row.get("results") or {}
    if "error" in row or ("error" in res and len(res) == 1):
        return f"{row['source']}: ERROR {row.get('error') or res['error']}"
    parts = [f"{name} {_fmt_ms(entry['median_ms'])} ms" if "median_ms" in entry else f"{name} ERROR {entry.get('error')}"
             for name, entry in res.items() if isinstance(entry, dict)]
    return f"{row['source']} 1 thread: " + ", ".join(parts)


def framework_ratio(row: dict[str, Any], package: str, baseline: str) -> float | None:
    res = row.get("results") or {}
    a, b = (res.get(package) or {}).get("median_ms"), (res.get(baseline) or {}).get("median_ms")
    return a / b if a is not None and b else None


SERVICE_MODES = {"sqlite": "SQLite (embedded)", "postgres": "PostgreSQL"}
#: The job service's goals: (what, where in a mode's results, limit in ms).
SERVICE_GOALS = [("Describe p99", ("describe", "p99_ms"), 50.0), ("List p99", ("list", "p99_ms"), 150.0),
                 ("pick-up", ("pickup", "median_ms"), 1000.0)]


def service_verdicts(mode: dict[str, Any]) -> list[tuple[str, float | None, float, bool | None]]:
    """Each goal of one store's service figures: (what, value in ms, limit in ms, met; None when not measured)."""
    out = []
    for what, (part, key), limit in SERVICE_GOALS:
        value = (mode.get(part) or {}).get(key)
        out.append((what, value, limit, None if value is None else value < limit))
    return out


def service_goal_text(mode: dict[str, Any]) -> str:
    verdicts = service_verdicts(mode)
    missed = [f"{what} {value:.0f} ms (goal < {limit:g} ms)" for what, value, limit, ok in verdicts if ok is False]
    if missed:
        return "not met: " + "; ".join(missed)
    return "met" if all(ok for *_, ok in verdicts) else "not measured"


def service_line(mode: dict[str, Any]) -> str:
    if "error" in mode:
        return f"{mode['mode']}: ERROR {mode['error']}"
    d, li, p = mode["describe"], mode["list"], mode["pickup"]
    return (f"{mode['mode']}: Describe p50 {_fmt_ms(d['p50_ms'])} / p99 {_fmt_ms(d['p99_ms'])} ms, List(100) p50 "
            f"{_fmt_ms(li['p50_ms'])} / p99 {_fmt_ms(li['p99_ms'])} ms, pick-up median {_fmt_ms(p['median_ms'])} ms -> "
            + service_goal_text(mode))


def summary(latency: list[dict[str, Any]], threads: list[int]) -> dict[str, Any]:
    """Per thread count and runtime: geometric mean and worst of the latency ratio to onnxruntime."""
    out: dict[str, Any] = {}
    for n in threads:
        per: dict[str, Any] = {}
        for runtime in VARIANTS + ["torch"]:
            ratios = [(ratio(r, runtime), f"{r['model']} b{r['batch']}") for r in latency if r["threads"] == n]
            ratios = [(x, where) for x, where in ratios if x is not None]
            if ratios:
                worst = max(ratios)
                per[runtime] = {"geomean_ratio": math.exp(sum(math.log(x) for x, _ in ratios) / len(ratios)),
                                "max_ratio": worst[0], "worst": worst[1], "measurements": len(ratios)}
        out[str(n)] = per
    return out


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals on this machine, each with the value reached and a verdict."""
    rows = []
    one = (results.get("summary") or {}).get("1", {})
    subset = " (quick subset)" if results["config"]["quick"] else ""

    def add(goal: str, value: float | None, limit: float, text: str) -> None:
        verdict = "not measured" if value is None else ("met" if value <= limit else "not met")
        rows.append({"goal": goal, "value": text if value is not None else "-", "limit": limit, "verdict": verdict})

    untuned = one.get("neocompile")
    add("untuned geometric mean <= 1.5x onnxruntime (1 thread)", untuned and untuned["geomean_ratio"], 1.5,
        f"{untuned['geomean_ratio']:.2f}x{subset}" if untuned else "")
    add("no model slower than 2x onnxruntime (untuned, 1 thread)", untuned and untuned["max_ratio"], 2.0,
        f"worst {untuned['max_ratio']:.2f}x ({untuned['worst']}){subset}" if untuned else "")
    tuned = one.get("neocompile-tuned")
    trials = results["config"]["tune_trials"]
    if tuned:
        add(f"tuned geometric mean <= 1.0x onnxruntime (1 thread, {trials} trials)", tuned["geomean_ratio"], 1.0,
            f"{tuned['geomean_ratio']:.2f}x{subset}")
    else:
        rows.append({"goal": "tuned geometric mean <= 1.0x onnxruntime (1 thread)", "value": "-", "limit": 1.0,
                     "verdict": results["variants"]["neocompile-tuned"].get("reason", "not measured")})
    jobs = [j for j in results.get("compiles", []) + (results.get("memory") or [])
            if j["model"] == "resnet50" and j["batch"] == 1 and j["variant"] == "neocompile" and j["ok"]]
    add("ResNet-50 untuned compile <= 60 s (whole job)", jobs[0]["seconds"] if jobs else None, 60.0,
        f"{jobs[0]['seconds']:.1f} s" if jobs else "")
    for row in results.get("frameworks") or []:
        if row["source"] == "xgboost":
            x = framework_ratio(row, "neocompile", "xgboost")
            add("XGBoost package at least as fast as xgboost inplace_predict (1 thread)", x, 1.0,
                f"{x:.2f}x xgboost's time" if x is not None else "")
    memory = [j for j in results.get("memory") or [] if j["ok"]]
    floor = memory_floor(memory)
    for job in memory:
        if job is floor:
            continue
        factor = job["peak_tree_rss"] / job["onnx_bytes"]
        text = f"{factor:.1f}x ({job['peak_tree_rss'] / GiB:.2f} GiB for {job['onnx_bytes'] / 1e6:.0f} MB"
        if "peak_tree_anon" in job:
            text += f"; anonymous {job['peak_tree_anon'] / job['onnx_bytes']:.1f}x"
        if floor is not None:
            text += (f"; the floor, {_label(floor['model'])} at {floor['onnx_bytes'] / 1e6:.0f} MB, peaks at "
                     f"{floor['peak_tree_rss'] / GiB:.2f} GiB")
        add(f"{_label(job['model'])} peak compile memory <= 3x the model file", factor, 3.0, text + ")")
    return rows


def _stage_memory(stage: dict[str, Any]) -> str:
    anon = f" / {stage['peak_tree_anon'] / GiB:.2f}" if "peak_tree_anon" in stage else ""
    return f"{stage['seconds']:.1f} s ({stage['peak_tree_rss'] / GiB:.2f}{anon})"


def memory_floor(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The compile-memory test's floor: its smallest model (bench.MEMORY_MODELS), whose peak is what any job takes
    whatever its weights (TVM's library code, LLVM and the linker); None for a run without one."""
    small = [j for j in jobs if j.get("ok") and j["model"] not in ("vgg19", "resnet50")]
    return min(small, key=lambda j: j["onnx_bytes"]) if small else None


def chart(results: dict[str, Any], path: Path) -> Path | None:
    """Latency relative to onnxruntime per model, one panel per thread count (log scale); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed (pip install -e '.[bench]'): no chart", flush=True)
        return None
    threads = results["config"]["threads"]
    shown = [r for r in VARIANTS + ["torch"] if any(ratio(row, r) for row in results["latency"])]
    colors = {"neocompile": "#1f77b4", "neocompile-tvm-default": "#aec7e8", "neocompile-tuned": "#2ca02c", "torch": "#ff7f0e"}
    fig, axes = plt.subplots(1, len(threads), figsize=(6.5 * len(threads), 4.2), squeeze=False, sharey=True)
    for ax, n in zip(axes[0], threads):
        rows = [r for r in results["latency"] if r["threads"] == n]
        width = 0.8 / max(len(shown), 1)
        for i, runtime in enumerate(shown):
            xs = [j + (i - (len(shown) - 1) / 2) * width for j in range(len(rows))]
            ys = [ratio(r, runtime) or 0 for r in rows]
            ax.bar(xs, ys, width, label=LABELS[runtime], color=colors[runtime])
        ax.axhline(1.0, color="black", linewidth=1, label="onnxruntime")
        ax.axhline(1.5, color="grey", linewidth=0.8, linestyle="--", label="goal: 1.5x")
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)), [f"{_label(r['model']).split(' (')[0]}\nbatch {r['batch']}" for r in rows], fontsize=8)
        ax.set_title(f"{n} thread{'s (all usable cores)' if n > 1 else ''}")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0][0].set_ylabel("median latency / onnxruntime (log)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"neocompile vs onnxruntime on {results['machine']['cpu_model']} ({results['target']}), lower is better",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GiB:.2f} GiB"


def markdown(results: dict[str, Any], chart_path: Path | None, root: Path) -> list[str]:
    m, cfg, v = results["machine"], results["config"], results["machine"]["versions"]
    flags = m["cpu_flags"]
    variants = results["variants"]
    lines = [
        f"Measured {results['measured_at']} on {m['cpu_model']} ({m['usable_cores']} usable cores, "
        f"AVX2 {'yes' if flags['avx2'] else 'no'}, AVX-512 {'yes' if flags['avx512f'] else 'no'}, LLVM host CPU "
        f"`{m['llvm_host_cpu']}`, {m['memory_gib']} GiB), packages for `{results['target']}`; neocompile {v['neocompile']}, "
        f"TVM {v['tvm']}, onnxruntime {v['onnxruntime']}, torch {v['torch']}."
        + (" **Quick run** (`--quick`: a subset with short budgets), not the full set." if cfg["quick"] else ""),
        "",
    ]
    if chart_path is not None:
        lines += [f"![neocompile latency relative to onnxruntime]({chart_path.relative_to(root).as_posix()})", ""]
    tuned_head = (f"tuned ({variants['neocompile-tuned']['budget']})" if variants["neocompile-tuned"]["available"]
                  else "tuned")
    lines += [
        "Median latency in ms; ratio = neocompile / onnxruntime; max |diff| = largest absolute difference of "
        "neocompile's output from onnxruntime's; load = the machine's 1-minute load average before / after the "
        "measurement (other jobs on the machine are the main source of noise).",
        "",
        f"| model | batch | threads | neocompile | TVM default schedules | {tuned_head} | onnxruntime | torch | ratio vs ORT | max \\|diff\\| | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for row in results["latency"]:
        res = row["results"]
        cells = []
        for runtime in RUNTIMES:
            entry = res.get(runtime)
            if entry is None:
                cells.append("-" if variants.get(runtime, {"available": True})["available"] else "n/a")
            elif "error" in entry:
                notes.append(f"{row['model']} b{row['batch']} {row['threads']}t {runtime}: {entry['error']}")
                cells.append("error")
            else:
                cells.append(_fmt_ms(entry["median_ms"]))
        r = ratio(row, "neocompile")
        diff = (res.get("neocompile") or {}).get("max_abs_diff_vs_ort")
        if "error" in res:
            notes.append(f"{row['model']} b{row['batch']} {row['threads']}t: {res['error']}")
        lines.append(f"| {_label(row['model'])} | {row['batch']} | {row['threads']} | " + " | ".join(cells)
                     + f" | {f'{r:.2f}x' if r else '-'} | {f'{diff:.1e}' if diff is not None else '-'} | "
                     + ("/".join(f"{x:.1f}" for x in res.get("load_average", [])) or "-") + " |")
    for n, per in (results.get("summary") or {}).items():
        geo = {k: f"{x['geomean_ratio']:.2f}x" for k, x in per.items()}
        lines.append(f"| **geometric mean of ratio vs ORT** | | {n} | {geo.get('neocompile', '-')} | "
                     f"{geo.get('neocompile-tvm-default', '-')} | {geo.get('neocompile-tuned', '-')} | 1.00x | "
                     f"{geo.get('torch', '-')} | | | |")
    lines.append("")
    for name, entry in variants.items():
        if not entry["available"]:
            lines.append(f"- `{name}`: {entry['reason']}")
    lines += [f"- {note}" for note in notes]
    lines += ["", "Goals (at 1 thread, this machine):", "", "| goal | reached | verdict |", "|---|---|---|"]
    lines += [f"| {g['goal']} | {g['value']} | {g['verdict']} |" for g in results["goals"]]

    lines += ["", "Compile jobs (Python API, one child process per job; peak = RSS of the job's whole process tree, "
              "sampled every 20 ms):", "",
              "| model | batch | variant | whole job | load | compile | verify | package | peak RSS | package |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for job in results["compiles"]:
        if not job["ok"]:
            lines.append(f"| {_label(job['model'])} | {job['batch']} | {job['variant']} | failed: {job.get('error', '')[:200]} | | | | | | |")
            continue
        st = job["timings"]
        lines.append(f"| {_label(job['model'])} | {job['batch']} | {job['variant']} | {job['seconds']:.1f} s | "
                     + " | ".join(f"{st.get(s, 0):.1f} s" for s in ("load", "compile", "verify", "package"))
                     + f" | {_gib(job['peak_tree_rss'])} | {job['package_bytes'] / 1e6:.0f} MB |")

    if results.get("memory"):
        lines += ["", "Compile memory: the peak RSS of the job's process tree (the job, its load sandbox, verification "
                  "runner and linker, summed, sampled every 20 ms), its anonymous part (RSS less the pages mapped from "
                  "files, which are mostly TVM's 259 MB library), and getrusage's maxrss of the job's process and of its "
                  "largest child (a forked child counts the job's RSS at the fork); per stage, seconds and the tree's "
                  "peak RSS / anonymous during that stage (GiB). The smallest model is the floor: what any job takes "
                  "whatever its weights.", "",
                  "| model | ONNX file | whole job | peak RSS | peak / file | peak anonymous | maxrss job / child | "
                  + " | ".join(STAGES) + " |",
                  "|---|---|---|---|---|---|---|" + "---|" * len(STAGES)]
        for job in results["memory"]:
            if not job["ok"]:
                lines.append(f"| {_label(job['model'])} | {job['onnx_bytes'] / 1e6:.0f} MB | failed: {job.get('error', '')[:200]} |"
                             + " |" * (len(STAGES) + 4))
                continue
            stages = job["stages"]
            anon = job.get("peak_tree_anon")
            lines.append(
                f"| {_label(job['model'])} | {job['onnx_bytes'] / 1e6:.0f} MB | {job['seconds']:.1f} s | {_gib(job['peak_tree_rss'])} | "
                f"{job['peak_tree_rss'] / job['onnx_bytes']:.1f}x | "
                + (f"{_gib(anon)} ({anon / job['onnx_bytes']:.1f}x) | " if anon is not None else "- | ")
                + f"{job['maxrss']['self'] / GiB:.2f} / {job['maxrss']['children'] / GiB:.2f} GiB | "
                + " | ".join(_stage_memory(stages[s]) if s in stages else "-" for s in STAGES) + " |")

    if results.get("arm"):
        emulators = ", ".join(sorted({f"`{r['emulated']['emulator']}`" for r in results["arm"]
                                      if "emulator" in (r.get("emulated") or {})})) or "not run"
        lines += ["", f"ARM: {_label(results['arm'][0]['model'])}, batch 1. Instructions counted in the model's kernels "
                  "(the functions TVM generated, not compiler-rt/libm) of `compiled.so` by objdump; NEON = SIMD on "
                  "q/v registers (aarch64) or NEON d/q operations (armv7). Emulated time: the package's `bin/neo_run` "
                  f"under qemu-user ({emulators}), model call only, median of {results['config']['arm_runs']} runs, "
                  "1 thread.", "",
                  "| target | variant | NEON instructions (FMA) | scalar FP (FMA) | kernels vectorized | emulated run | vs TVM default schedules |",
                  "|---|---|---|---|---|---|---|"]
        base = {r["target"]: (r.get("emulated") or {}).get("median_ms") for r in results["arm"]
                if r["variant"] == "neocompile-tvm-default"}
        for r in results["arm"]:
            where = f"`{r['target']}` ({r.get('arch', '')})"
            if "disassembly" not in r:
                err = r.get("error") or (r.get("compile") or {}).get("error")
                lines.append(f"| {where} | {r['variant']} | {str(err)[:200]} | | | | |")
                continue
            d, e = r["disassembly"], r.get("emulated") or {}
            emu = f"{_fmt_ms(e['median_ms'])} ms" if "median_ms" in e else f"error: {e.get('error', '')[:120]}"
            b = base.get(r["target"])
            rel = f"{e['median_ms'] / b:.2f}x" if b and "median_ms" in e and r["variant"] != "neocompile-tvm-default" else "-"
            if "error" in d:
                lines.append(f"| {where} | {r['variant']} | {d['error']} | | | {emu} | {rel} |")
            else:
                lines.append(f"| {where} | {r['variant']} | {d['vector']} of {d['instructions']} ({d['vector_fma']}) | "
                             f"{d['scalar_fp']} ({d['scalar_fma']}) | {d['kernels_vectorized']} of {d['kernels_with_fp']} | {emu} | {rel} |")

    if results.get("frameworks"):
        lines += ["", "Models as frameworks save them (bench/frameworks.py), each compiled from its framework's own "
                  "file and timed at 1 thread against that framework and onnxruntime in one child process; ratio = "
                  "neocompile / the framework, and / onnxruntime; max |diff| against the framework's output.", "",
                  "| model | compiled from | compile (verification) | neocompile | framework | onnxruntime | vs framework | vs ORT | max \\|diff\\| |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in results["frameworks"]:
            res = row.get("results") or {}
            if "error" in row or not row.get("compiles"):
                lines.append(f"| {row['title']} | | {str(row.get('error') or res.get('error'))[:200]} | | | | | | |")
                continue
            ref = row["reference"]
            base = res.get(ref) or {}
            ort = res.get("onnxruntime") or {}
            for name, job in row["compiles"].items():
                entry = res.get(name) or {}
                how = name.removeprefix("neocompile").strip(" ()") or "-"
                compiled = (f"{job['seconds']:.1f} s ({job.get('verification')})" if job["ok"]
                            else f"failed: {str(job.get('error'))[:160]}")
                if "error" in entry:
                    compiled += f"; run: {str(entry['error'])[:120]}"
                fr, orr = framework_ratio(row, name, ref), framework_ratio(row, name, "onnxruntime")
                diff = entry.get(f"max_abs_diff_vs_{ref}")
                lines.append(f"| {row['title']} | {how} | {compiled} | {_fmt_ms(entry.get('median_ms'))} | "
                             f"{ref} {_fmt_ms(base.get('median_ms'))} | {_fmt_ms(ort.get('median_ms')) if ort else 'n/a'} | "
                             f"{f'{fr:.2f}x' if fr else '-'} | {f'{orr:.2f}x' if orr else '-'} | "
                             f"{f'{diff:.1e}' if diff is not None else '-'} |")

    svc = results.get("service")
    if svc:
        cfg_s = svc["config"]
        lines += ["", f"Job service (`neocompile serve`, bench/service.py; measured {svc['measured_at']}): "
                  f"{cfg_s['jobs']:,} jobs stored (queued: the server runs without workers), {cfg_s['clients']} "
                  "concurrent clients, each its own process and boto3 client without retries, calling without pause "
                  f"for {cfg_s['seconds_per_phase']:g} s: DescribeCompilationJob on random jobs, then "
                  f"ListCompilationJobs with MaxResults={cfg_s['page_size']} walking every page (NextToken) of "
                  f"{len(cfg_s.get('list_variants', [])) or 'several'} sort orders and filters. Latency is the boto3 call as its caller sees it (request, server, "
                  "botocore's parsing); 1 client alone = the same calls by one client, one at a time; CPU = the server "
                  "process's and the clients' CPU time per call (the clients share the machine's cores with the "
                  "server, and with whatever else runs: load = the 1-minute load average before / after). Pick-up: an idle worker (`--workers 1`), a real job created (examples/model.tar.gz, "
                  "file:// URIs) until CompilationStartTime is set, from just before the Create call; median (worst) "
                  f"of {cfg_s['pickup_jobs']} jobs created one at a time, each stopped once started. Goals: "
                  "Describe p99 < 50 ms, List p99 < 150 ms, pick-up < 1 s.", "",
                  "| job store | Describe p50 / p99 | List (100 a page) p50 / p99 | pick-up median (worst) | goals | "
                  "1 client alone p50: Describe / List | CPU per call, server / clients: Describe; List | load |",
                  "|---|---|---|---|---|---|---|---|"]
        for mode in svc["modes"]:
            title = SERVICE_MODES.get(mode["mode"], mode["mode"])
            if "error" in mode:
                lines.append(f"| {title} | failed: {str(mode['error'])[:200]} | | | | | | |")
                continue
            d, li, p = mode["describe"], mode["list"], mode["pickup"]
            lines.append(
                f"| {title} | {_fmt_ms(d['p50_ms'])} / {_fmt_ms(d['p99_ms'])} ms | {_fmt_ms(li['p50_ms'])} / "
                f"{_fmt_ms(li['p99_ms'])} ms | {_fmt_ms(p['median_ms'])} ms ({_fmt_ms(p['max_ms'])}) | "
                f"{service_goal_text(mode)} | {_fmt_ms(d['one_client']['p50_ms'])} / "
                f"{_fmt_ms((li.get('one_client') or {}).get('p50_ms'))} ms | "
                f"{d['server_cpu_ms_per_call']:.1f} / {d['client_cpu_ms_per_call']:.1f}; {li['server_cpu_ms_per_call']:.1f} / "
                f"{li['client_cpu_ms_per_call']:.1f} ms | "
                + "/".join(f"{x:.1f}" for x in (mode["load_average_before"][0], mode["load_average_after"][0])) + " |")

    if results.get("transform"):
        from bench import transform  # bench.py imports this module: import the part's renderer on use

        lines += ["", transform.render(results["transform"])]

    if results.get("runtime_overhead"):
        from bench import rt_overhead  # as transform: bench.py imports this module

        lines += ["", rt_overhead.render(results["runtime_overhead"])]

    prof = results.get("profile")
    if prof and "top" in prof:
        lines += ["", f"Where the time goes in the slowest model relative to onnxruntime, {_label(prof['model'])} batch "
                  f"{prof['batch']} ({prof['ratio_vs_onnxruntime']:.1f}x onnxruntime, 1 thread): per kernel, timed "
                  f"through the Relax VM's instrument hook over {prof['runs']} runs ({_fmt_ms(prof['wall_ms'])} ms a "
                  f"run; {prof['kernels']} distinct functions called, VM builtins included).", "",
                  "| kernel | ms per run | share | calls per run |", "|---|---|---|---|"]
        lines += [f"| `{k['kernel']}` | {_fmt_ms(k['ms'])} | {k['share'] * 100:.1f}% | {k['calls']} |" for k in prof["top"]]
    elif prof:
        lines += ["", f"Profile of {prof['model']} batch {prof['batch']} failed: {prof.get('error')}"]

    lines += ["", f"How measured: `make bench` (bench/bench.py; `BENCH_ARGS=--quick` for a short run). Models are built "
              "in bench/models.py in plain torch with seeded random weights (the BERT-base encoder takes float "
              "embeddings [batch, 128, 768], so no embedding gather), exported to ONNX opset 17 and packed as Neo's "
              "model.tar.gz; each batch size is its own static-shape package. Every runtime gets the same seeded input "
              "in a child process started for the thread count (TVM_NUM_THREADS / `Model(num_threads=)`, onnxruntime "
              "intra-op threads with inter-op 1, `torch.set_num_threads`); after "
              f"{cfg['warmup']} warm-up runs each runtime is timed in 3 interleaved rounds for {cfg['budget_s']:g} s "
              "in all (at least 3 runs) and the median is reported. Compile figures are the whole job "
              "(fetch..upload, verification included) through `neocompile.compile_model` in a child process, "
              f"as bench/results.json records per stage. The whole benchmark took {results['bench_seconds'] / 60:.0f} min."]
    return lines


def update_readme(results: dict[str, Any], readme: Path, chart_path: Path | None) -> None:
    """Replace the README's section between the bench markers (or append one)."""
    lines = [START, *markdown(results, chart_path, readme.parent), END]
    text = readme.read_text()
    if START in text and END in text:
        text = text[: text.index(START)] + "\n".join(lines) + text[text.index(END) + len(END):]
    else:
        text += "\n" + "\n".join(lines) + "\n"
    readme.write_text(text)
