"""Tuning as a product feature (neocompile/tuning): MetaSchedule runs within the job, its records go to the cache,
and later jobs of other models that meet the same kernel reuse them without tuning; the cache's CLI; ARM targets.

Real MetaSchedule on tiny MLPs with a few trials, for ml_c4 (this CPU may lack AVX-512)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import neocompile
from neocompile import cli, modelzoo, options
from neocompile.errors import ValidationError
from neocompile.tuning import TuningCache
from neocompile.tuning.cache import Entry, read_export

#: The kernel both MLPs share: dense 64 -> 32 with bias and ReLU at batch 1.
SHARED = "fused_matmul_add_relu"


def _mlp(classes: int, seed: int):
    g = modelzoo._Graph(seed)
    x = g.node("Gemm", ["data", g.const(g.rng.standard_normal((32, 64)) * 0.2), g.const(g.rng.standard_normal(32))], transB=1)
    x = g.node("Relu", [x])
    x = g.node("Gemm", [x, g.const(g.rng.standard_normal((classes, 32)) * 0.2), g.const(np.zeros(classes))], transB=1)
    return g.model([("data", [1, 64])], x, "out", [1, classes])


def _archive(tmp: Path, classes: int, seed: int) -> Path:
    return modelzoo.onnx_archive(tmp / f"mlp{classes}.tar.gz", _mlp(classes, seed))


def _compile(tmp: Path, classes: int, seed: int, target: str = "ml_c4", **options_):
    events = []
    result = neocompile.compile_model(
        model_uri=str(_archive(tmp, classes, seed)), framework="ONNX", output_location=str(tmp / f"out-{target}"),
        data_input_config={"data": [1, 64]}, target_device=target, compiler_options=options_ or None,
        progress=events.append)
    notes = [e.detail for e in events if e.status == "note"]
    return result, notes


def _search_only(mp) -> None:
    """No template baselines: whether a 4-trial search beats a template depends on timing, and the tests of the
    cache's flow need records that replace the templates (test_tuning_keeps_templates_nothing_beat covers them)."""
    from neocompile.tuning import tune as tune_mod

    mp.setattr(tune_mod, "_template_baselines", lambda *a, **k: ({}, 0))


def _shared(kernels: dict) -> list[str]:
    return [name for name in kernels if name.startswith(SHARED)]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """Model A compiled with 8 trials (4 per kernel) into a fresh cache folder."""
    tmp = tmp_path_factory.mktemp("tuned")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEOCOMPILE_TUNING_CACHE", str(tmp / "cache"))
        _search_only(mp)
        result, notes = _compile(tmp, 10, seed=0, tuning={"trials": 8, "max-trials-per-task": 4})
    return result, notes, tmp / "cache"


def test_tuning_runs_in_the_job_reports_progress_and_fills_the_cache(tuned):
    result, notes, cache_dir = tuned
    tuning = result.meta["Compilation"]["Tuning"]
    assert tuning["Tuned"] is True and 0 < tuning["Trials"] <= 8 and tuning["Cache"] == "folder", tuning
    assert any(n.startswith("tuning task 1/2 ") and "best" in n for n in notes), notes
    assert any(n.startswith("saved records of") for n in notes), notes
    kernels = result.meta["Compilation"]["Kernels"]
    tuned_kernels = [k for k, how in kernels.items() if how == "tuned"]
    assert tuned_kernels and set(tuned_kernels) == set(tuning["RecordsApplied"]), (kernels, tuning)
    assert result.verification["status"] == "passed"  # the tuned package still matches onnxruntime
    entries = list(TuningCache(str(cache_dir)).entries())
    assert {e.task.rstrip("0123456789") for e in entries} >= {SHARED}
    assert all(e.records and e.records == sorted(e.records, key=lambda r: r["latency_us"]) for e in entries)


def test_tuning_keeps_templates_nothing_beat(tmp_path, monkeypatch):
    """Each kernel's template is timed first and filed with the search's records: the best record is never slower
    than the template, and a kernel whose best is its template keeps the template schedule."""
    monkeypatch.setenv("NEOCOMPILE_TUNING_CACHE", str(tmp_path / "cache"))
    result, notes = _compile(tmp_path, 10, seed=0, tuning={"trials": 4, "max-trials-per-task": 2})
    assert sum("the time to beat" in n for n in notes) == 2, notes
    tuning = result.meta["Compilation"]["Tuning"]
    kernels = result.meta["Compilation"]["Kernels"]
    entries = list(TuningCache(str(tmp_path / "cache")).entries())
    assert len(entries) == 2
    for entry in entries:
        templates = [r for r in entry.records if r["source"] == "template"]
        assert len(templates) == 1, entry.records
        assert entry.records[0]["latency_us"] <= templates[0]["latency_us"]
    kept, applied = set(tuning["TemplatesKept"]), set(tuning["RecordsApplied"])
    assert kept | applied == set(kernels) and not kept & applied, tuning
    assert all(kernels[k].startswith("template: ") for k in kept), kernels
    # a kernel a template variant won keeps the template, with the variant's knobs
    assert all(kernels[k] == "tuned" or kernels[k].endswith("(tuned knobs)") for k in applied), kernels
    assert all((tuning["RecordsApplied"][k]["Source"] == "template variant") == (kernels[k] != "tuned") for k in applied)
    assert result.verification["status"] == "passed"


def test_another_model_with_the_same_kernel_reuses_the_record_without_tuning(tuned, tmp_path, monkeypatch):
    from neocompile.tuning import tune as tune_mod

    monkeypatch.setenv("NEOCOMPILE_TUNING_CACHE", str(tuned[2]))
    monkeypatch.setattr(tune_mod, "tune", lambda *a, **k: pytest.fail("tuning ran"))
    result, _ = _compile(tmp_path, 5, seed=1)  # other weights, another classifier: one kernel in common
    kernels = result.meta["Compilation"]["Kernels"]
    tuning = result.meta["Compilation"]["Tuning"]
    shared = _shared(kernels)
    assert shared and all(kernels[k] == "tuned" for k in shared), kernels
    assert [k for k, how in kernels.items() if how != "tuned"], "the kernel B alone has should come from the templates"
    assert tuning["Tuned"] is False and tuning["Trials"] == 0 and tuning["Requested"] is None
    assert set(shared) <= set(tuning["RecordsApplied"]) and tuning["RecordsApplied"][shared[0]]["Source"] == "tuned"
    assert result.verification["status"] == "passed"


def test_tuning_false_ignores_the_cache(tuned, tmp_path, monkeypatch):
    from neocompile.compiler import compile_library
    from neocompile.targets import get_target

    monkeypatch.setenv("NEOCOMPILE_TUNING_CACHE", str(tuned[2]))
    mod = _relax(_mlp(10, 0))
    compiled = compile_library(mod, get_target("ml_c4"), options.parse({"tuning": False}), tmp_path / "m.so")
    assert "tuned" not in compiled.kernels.values()
    assert compiled.tuning_summary({"tuning": False})["Cache"] is None


def test_export_import_round_trip_marks_records_imported(tuned, tmp_path):
    source = str(tuned[2])
    assert cli.main(["tuning", "export", str(tmp_path / "records.json"), "--cache", source]) == 0
    exported = read_export(tmp_path / "records.json")
    assert exported and {e.workload_hash for e in exported} == {e.workload_hash for e in TuningCache(source).entries()}
    assert cli.main(["tuning", "import", str(tmp_path / "records.json"), "--cache", str(tmp_path / "other")]) == 0
    imported = {e.workload_hash: e for e in TuningCache(str(tmp_path / "other")).entries()}
    for entry in exported:
        assert [r["record"] for r in imported[entry.workload_hash].records] == [r["record"] for r in entry.records]
        assert {r["source"] for r in imported[entry.workload_hash].records} == {"imported"}
    # Importing again merges: the same traces once, not twice.
    assert cli.main(["tuning", "import", str(tmp_path / "records.json"), "--cache", str(tmp_path / "other")]) == 0
    again = {e.workload_hash: e for e in TuningCache(str(tmp_path / "other")).entries()}
    assert {h: len(e.records) for h, e in again.items()} == {h: len(e.records) for h, e in imported.items()}


def test_import_of_a_malformed_file_fails_clearly_and_writes_nothing(tuned, tmp_path, capsys):
    assert cli.main(["tuning", "export", str(tmp_path / "good.json"), "--cache", str(tuned[2])]) == 0
    data = json.loads((tmp_path / "good.json").read_text())
    # The last entry is damaged: a trace that does not parse. The good ones before it are not written either.
    data["entries"].append({**data["entries"][0], "records": [{**data["entries"][0]["records"][0], "record": [[["bogus"]], [1e-6]]}]})
    (tmp_path / "bad.json").write_text(json.dumps(data))
    target = tmp_path / "untouched"
    assert cli.main(["tuning", "import", str(tmp_path / "bad.json"), "--cache", str(target)]) == 1
    err = capsys.readouterr().err
    assert f"entries[{len(data['entries']) - 1}]" in err and "records[0] does not parse" in err and "nothing was imported" in err, err
    assert list(TuningCache(str(target)).entries()) == []
    (tmp_path / "junk.json").write_text('{"entries": []}')
    assert cli.main(["tuning", "import", str(tmp_path / "junk.json"), "--cache", str(target)]) == 1
    assert "not a tuning export" in capsys.readouterr().err


def test_prune_by_age_and_target(tuned, tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    assert cli.main(["tuning", "export", str(tmp_path / "all.json"), "--cache", str(tuned[2])]) == 0
    assert cli.main(["tuning", "import", str(tmp_path / "all.json"), "--cache", str(cache_dir)]) == 0
    count = len(list(TuningCache(str(cache_dir)).entries()))
    assert cli.main(["tuning", "prune", "--cache", str(cache_dir)]) == 2  # says what to prune, or nothing happens
    assert cli.main(["tuning", "prune", "--older-than", "1", "--cache", str(cache_dir)]) == 0
    assert len(list(TuningCache(str(cache_dir)).entries())) == count  # all fresh
    old = next(iter(cache_dir.glob("*/*.json")))
    data = json.loads(old.read_text())
    old.write_text(json.dumps({**data, "updated": "2020-01-01T00:00:00Z"}))
    capsys.readouterr()
    assert cli.main(["tuning", "prune", "--older-than", "30", "--cache", str(cache_dir), "--json"]) == 0
    assert [r["Workload"] for r in json.loads(capsys.readouterr().out)["Removed"]] == [data["workload_hash"]]
    assert cli.main(["tuning", "prune", "--target-device", "rk3399", "--cache", str(cache_dir)]) == 0
    assert len(list(TuningCache(str(cache_dir)).entries())) == count - 1  # no rk3399 records to remove
    assert cli.main(["tuning", "prune", "--target-device", "ml_c4", "--cache", str(cache_dir)]) == 0
    assert list(TuningCache(str(cache_dir)).entries()) == []


def test_arm_target_does_not_tune_but_applies_imported_records(tuned, tmp_path, monkeypatch):
    """qemu's timings say nothing about a Cortex-A53: an rk3399 job asked to tune does not, and uses the records
    imported for its target (here the ml_c4 traces filed under rk3399's target, as a board's RPC run would)."""
    from neocompile.targets import get_target
    from neocompile.tuning import tune as tune_mod
    from neocompile.tuning.apply import target_key
    from neocompile.tuning.cache import write_export

    entries = [e for e in TuningCache(str(tuned[2])).entries() if e.task.startswith(SHARED)]
    arm_key = target_key(get_target("rk3399").target_dict({}))
    for e in entries:
        e.target = arm_key
    write_export(entries, tmp_path / "board.json")
    monkeypatch.setenv("NEOCOMPILE_TUNING_CACHE", str(tmp_path / "cache"))
    assert cli.main(["tuning", "import", str(tmp_path / "board.json")]) == 0
    monkeypatch.setattr(tune_mod, "tune", lambda *a, **k: pytest.fail("tuning ran for an ARM target"))
    result, notes = _compile(tmp_path, 5, seed=1, target="rk3399", tuning={"trials": 8})
    tuning = result.meta["Compilation"]["Tuning"]
    assert tuning["Tuned"] is False and "cannot be timed on this machine" in tuning["Note"], tuning
    assert any("not tuned" in n for n in notes), notes
    kernels = result.meta["Compilation"]["Kernels"]
    shared = _shared(kernels)
    assert shared and all(kernels[k] == "tuned" for k in shared), kernels
    assert tuning["RecordsApplied"][shared[0]]["Source"] == "imported"
    assert result.verification["status"] == "passed", result.verification  # under qemu-aarch64


def test_s3_cache_serves_records_and_merges_concurrent_writes(tuned, s3_env, tmp_path, monkeypatch, capsys):
    from neocompile.compiler import compile_library
    from neocompile.targets import get_target

    location = f"s3://{s3_env}/tuning"
    assert cli.main(["tuning", "export", str(tmp_path / "records.json"), "--cache", str(tuned[2])]) == 0
    assert cli.main(["tuning", "import", str(tmp_path / "records.json"), "--cache", location]) == 0
    capsys.readouterr()
    assert cli.main(["tuning", "list", "--json", "--cache", location]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["Kind"] == "s3" and len(listed["Entries"]) == len(read_export(tmp_path / "records.json"))
    monkeypatch.setenv("NEOCOMPILE_TUNING_CACHE", location)
    compiled = compile_library(_relax(_mlp(5, 1)), get_target("ml_c4"), {}, tmp_path / "m.so")
    shared = _shared(compiled.kernels)
    assert shared and all(compiled.kernels[k] == "tuned" for k in shared), compiled.kernels
    assert compiled.tuning_summary({})["Cache"] == "s3"
    _concurrent_puts(TuningCache(location))


def test_folder_cache_merges_concurrent_writes(tmp_path):
    _concurrent_puts(TuningCache(str(tmp_path / "cache")))


def _concurrent_puts(cache: TuningCache) -> None:
    """Eight workers each add a record to the same (workload, target) at once: every record survives (best KEEP)."""
    def entry(i: int) -> Entry:
        return Entry(target='{"kind":"llvm"}', workload_hash="00000000000000aa", workload=["1", "x"], task="k",
                     records=[{"record": [[[f"trace{i}"]], [i * 1e-6]], "latency_us": float(i + 1), "source": "tuned"}],
                     trials=1)

    threads = [threading.Thread(target=cache.put, args=(entry(i),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = cache.get("00000000000000aa", '{"kind":"llvm"}')
    assert stored is not None and stored.trials == 8
    assert [r["latency_us"] for r in stored.records] == [float(i + 1) for i in range(8)]


@pytest.fixture
def rpc_server():
    """TVM's own RPC server (what runs on a board) on a free loopback port; yields "host:port"."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                             "--port-end", str(port + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own group: the server's worker processes end with it
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "the RPC server exited"
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_tuning_over_rpc_times_candidates_on_the_server(rpc_server, tmp_path, monkeypatch):
    """The route for a real board: candidates linked with the device's toolchain, uploaded to its RPC server and
    timed there (here the server runs on this machine, for ml_c4)."""
    from neocompile.compiler import compile_library
    from neocompile.targets import get_target

    monkeypatch.setenv("NEOCOMPILE_TUNING_CACHE", str(tmp_path / "cache"))
    _search_only(monkeypatch)
    opts = options.parse({"tuning": {"trials": 4, "rpc": {"server": rpc_server, "cores": 2}}})
    notes = []
    compiled = compile_library(_relax(_mlp(10, 0)), get_target("ml_c4"), opts, tmp_path / "m.so", note=notes.append)
    assert any(f"RPC server {rpc_server}" in n for n in notes), notes
    summary = compiled.tuning_summary(opts)
    assert summary["Tuned"] and summary["Trials"] == 4 and summary["RecordsApplied"], (summary, notes)
    compiled.tuning.commit()
    assert list(TuningCache(str(tmp_path / "cache")).entries())


def test_warm_builder_links_candidates_for_a_device_with_its_toolchain():
    import tvm
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    from neocompile.cpu.pipeline import prepare
    from neocompile.targets import get_target
    from neocompile.tuning.builder import WarmBuilder

    device = get_target("rk3399")
    target = tvm.target.Target(device.target_dict({}))
    with target:
        mod = prepare(_relax(_mlp(10, 0)), target)
    func = next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    builder = WarmBuilder(max_workers=1, link_for=device)
    try:
        (result,) = builder.build([BuilderInput(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)])
    finally:
        builder.close()
    assert result.error_msg is None, result.error_msg
    header = Path(result.artifact_path).read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


@pytest.mark.parametrize("value, message", [
    ({"trials": 4, "rpc": {"server": "board"}}, "tuning.rpc.server: 'board' is not valid; expected host:port"),
    ({"trials": 4, "rpc": {"tracker": "t:9190"}}, "expected {\"server\": \"host:port\"} or {\"tracker\""),
    ({"trials": 4, "rpc": {"server": "b:9090", "cores": 0}}, "tuning.rpc.cores: 0 is not valid"),
    ({"trials": 0}, "tuning.trials: 0 is not valid; expected an integer >= 1"),
    ({"trials": "many"}, "tuning.trials: 'many' is not valid; expected an integer >= 1"),
    ({"max-trials-per-task": 3}, "lacks 'trials'"),
    ({"trials": 4, "budget": 9}, "unknown field 'budget'"),
    (16, "tuning: 16 is not valid; expected {\"trials\": N}"),
])
def test_bad_tuning_option_names_the_value(value, message):
    with pytest.raises(ValidationError, match="OutputConfig.CompilerOptions.tuning") as info:
        options.parse({"tuning": value})
    assert message in str(info.value)


def test_tune_flag_sets_the_tuning_option():
    args = cli._Parser(prog="compile-model")
    cli._add_compile_args(args)
    ns = args.parse_args(["--model-uri", "m.tar.gz", "--framework", "onnx", "--output-location", "out",
                          "--target-device", "ml_c4", "--compiler-options", '{"verify": false, "tuning": {"max-trials-per-task": 2}}',
                          "--tune", "16"])
    request = cli.build_request(ns)
    assert options.parse(request.compiler_options) == {"verify": False, "tuning": {"max-trials-per-task": 2, "trials": 16}}
    assert cli.compile_model_main(["--tune", "0", "--model-uri", "m", "--framework", "onnx", "--output-location", "o",
                                   "--target-device", "ml_c4"]) == 2


def test_tuning_stops_when_the_next_round_would_miss_the_deadline():
    from neocompile.tuning.tune import OutOfTime, _Watch, tuning_deadline

    assert tuning_deadline(None) is None
    assert tuning_deadline(1000.0, now=100.0) == pytest.approx(1000.0 - 0.25 * 900)  # a quarter kept for the rest
    assert tuning_deadline(150.0, now=100.0) == pytest.approx(90.0)  # at least 60 s kept: no tuning at all

    class Result:
        error_msg, run_secs = None, [2e-6]

    lines = []
    watch = _Watch(["a", "b"], 64, stop_at=time.monotonic() + 3600, progress=lines.append)
    watch.round(0, [Result()] * 4)
    assert not watch.out_of_time and lines[-1] == "tuning task 1/2 a: 4 trials, best 2.00 us; 4/64 trials in all"
    watch.stop_at = time.monotonic() + watch.slowest_round / 2  # the next round cannot end in time
    with pytest.raises(OutOfTime):
        watch.round(1, [Result()] * 4)
    assert watch.out_of_time and lines[-1].startswith("tuning stopped")


def _relax(model):
    from tvm.relax.frontend.onnx import from_onnx

    return from_onnx(model, {"data": [1, 64]}, keep_params_in_input=False)


def test_template_variants_stop_at_the_tuning_deadline():
    """Past the time for tuning, no template (or variant) is built or timed: the kernels keep the pipeline's
    templates, and the trials used are none."""
    import time

    from neocompile.targets import get_target
    from neocompile.tuning import tune as tune_mod

    def never(*a, **k):
        raise AssertionError("nothing may be built or timed after the deadline")

    builder = type("B", (), {"build": never})()
    out, used = tune_mod._template_baselines([("k", "0" * 16, None, 1)], None, get_target("ml_c4"), builder, None,
                                             lambda line: None, budget=64, stop_at=time.monotonic() - 1)
    assert out == {} and used == 0
