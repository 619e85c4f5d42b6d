"""Command line: ``compile-model`` (shaped after ``aws sagemaker create-compilation-job``) and ``neocompile``."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import NeoError, ValidationError

PROG_HELP = """Compile a trained model archive (model.tar.gz) for a SageMaker Neo TargetDevice or TargetPlatform.

Example:
  compile-model --framework ONNX --model-uri model.tar.gz --data-input-config '{"data":[1,3,224,224]}' \\
      --target-device ml_c5 --output-location ./out
writes ./out/model-ml_c5.tar.gz (<archive stem>-<target>.tar.gz). URIs may be s3://bucket/key, file:// URIs or
plain paths. Exit status: 0 done, 1 the job failed or a value is wrong, 2 malformed command line, 3 internal error.
"""

# Exit statuses, as the README and --help state them.
OK, FAILED, USAGE, INTERNAL = 0, 1, 2, 3
# The reader of stdout went away (`neocompile targets | head -1`): exit quietly with the status the shell reports for
# a process killed by SIGPIPE (128 + 13), as cat, grep or git do, so `set -o pipefail` treats neocompile like them;
# not 0, since not all of the output was delivered.
CLOSED_PIPE = 141


class _UsageError(Exception):
    """A malformed command line; raised by the parser instead of exiting, so that --json can answer as well."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(self, message)


class _StdoutClosed(Exception):
    """Writing to stdout failed because its reader is gone."""


def _emit(text: str) -> None:
    """Print a result on stdout; a closed pipe ends the command quietly (CLOSED_PIPE), it is no error of ours."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise _StdoutClosed from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected an integer >= 1")
    return value


def _add_compile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-uri", "--s3-uri", dest="model_uri", help="the model.tar.gz: s3://bucket/key, file:///path or a path")
    p.add_argument("--framework", help="ONNX | PYTORCH | TENSORFLOW | KERAS | TFLITE | MXNET | XGBOOST (DARKNET, SKLEARN: later releases)")
    p.add_argument("--framework-version", help="InputConfig.FrameworkVersion (recorded in the manifest)")
    p.add_argument("--data-input-config", help='input names and shapes, e.g. \'{"data":[1,3,224,224]}\' (PyTorch also [[1,3,224,224]])')
    target = p.add_mutually_exclusive_group()  # as in AWS: a device or a platform, never both
    target.add_argument("--target-device", help="a TargetDevice, see `neocompile targets`")
    target.add_argument("--target-platform", help="Os=LINUX,Arch=ARM64[,Accelerator=NVIDIA] or the JSON structure (instead of --target-device)")
    p.add_argument("--compiler-options", help="JSON (single quotes tolerated): mcpu, mattr, dtype, gpu-code, verify, ...")
    p.add_argument("--output-location", "--s3-output-location", dest="output_location", help="folder or s3://bucket/prefix for the package")
    p.add_argument("--job-name", "--compilation-job-name", dest="job_name", help="CompilationJobName (in the result; not in the package)")
    p.add_argument("--max-runtime-seconds", type=int, help="stop the job after this many seconds (StoppingCondition.MaxRuntimeInSeconds)")
    p.add_argument("--tune", type=_positive_int, metavar="TRIALS",
                   help='tune the CPU kernels with MetaSchedule for TRIALS trials (CompilerOptions {"tuning": {"trials": TRIALS}}); '
                        "records are cached and reused by later jobs")
    p.add_argument("--cli-input-json", help="a CreateCompilationJob request body: JSON text or file://request.json")
    p.add_argument("--quiet", action="store_true", help="no per-stage progress on stderr")
    p.add_argument("--json", action="store_true",
                   help="print the result (artifact, digest, verification, timings) as JSON; on failure an AWS-style error object")
    p.set_defaults(func=cmd_compile, check=_check_compile_args, parser=p)


def _check_compile_args(args: argparse.Namespace) -> None:
    """Without --cli-input-json the flags are the whole request: a missing one is a malformed command line."""
    if args.cli_input_json:
        return
    missing = [flag for flag, value in (("--model-uri", args.model_uri), ("--framework", args.framework),
                                        ("--output-location", args.output_location)) if not value]
    if not (args.target_device or args.target_platform):
        missing.append("--target-device or --target-platform")
    if missing:
        args.parser.error(f"missing required argument(s): {', '.join(missing)} (or give --cli-input-json)")


def _parse_platform(text: str) -> dict[str, str]:
    text = text.strip()
    if text.startswith("{"):
        from .datainput import parse_structured

        value = parse_structured(text, "TargetPlatform")
        if not isinstance(value, dict):
            raise ValidationError(f"OutputConfig.TargetPlatform: {text!r} is not valid JSON; expected {{\"Os\": \"LINUX\", \"Arch\": \"ARM64\"}}")
        return value
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not value:
            raise ValidationError(f"OutputConfig.TargetPlatform: '{part}' is not Key=Value; expected e.g. Os=LINUX,Arch=ARM64")
        out[key.strip()] = value.strip()
    return out


def _read_cli_input_json(text: str) -> dict[str, Any]:
    if text.startswith("file://"):
        path = Path(text[len("file://"):])
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValidationError(f"--cli-input-json: cannot read {path}: {exc.strerror}") from exc
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        why = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        if not text.lstrip().startswith(("{", "[")):  # a file name, given without file:// (the AWS CLI wants it too)
            raise ValidationError(f"--cli-input-json: {text!r} is {why}; to read a file give file://{text}") from None
        raise ValidationError(f"--cli-input-json: {why}") from None
    return body


def build_request(args: argparse.Namespace):
    """Merge --cli-input-json with explicit flags (flags win, as in the AWS CLI)."""
    from .pipeline import CompilationRequest

    if args.cli_input_json:
        req = CompilationRequest.from_api(_read_cli_input_json(args.cli_input_json))
        # AWS validates the merged request: a device from one source and a platform from the other conflict.
        given = "TargetDevice" if req.target_device else "TargetPlatform" if req.target_platform else None
        flag = "--target-platform" if args.target_platform else "--target-device" if args.target_device else None
        if given and flag and flag != {"TargetDevice": "--target-device", "TargetPlatform": "--target-platform"}[given]:
            raise ValidationError(
                f"OutputConfig: TargetDevice and TargetPlatform are mutually exclusive; --cli-input-json gives {given} "
                f"and {flag} the other; give one of them"
            )
    else:
        req = CompilationRequest(model_uri=args.model_uri, framework=args.framework, output_location=args.output_location)
    for field in ("model_uri", "framework", "output_location", "data_input_config", "compiler_options", "job_name", "framework_version", "max_runtime_seconds"):
        value = getattr(args, field)
        if value is not None:
            setattr(req, field, value)
    if args.target_device:
        req.target_device = args.target_device
    if args.target_platform:
        req.target_platform = _parse_platform(args.target_platform)
    if args.tune:
        req.compiler_options = _with_tuning(req.compiler_options, args.tune)
    return req


def _with_tuning(compiler_options: Any, trials: int) -> str:
    """CompilerOptions with ``tuning.trials`` set by --tune (other tuning fields and options kept)."""
    from .datainput import parse_structured

    current = parse_structured(compiler_options, "CompilerOptions") if compiler_options else {}
    if not isinstance(current, dict):
        raise ValidationError(
            f"OutputConfig.CompilerOptions: {compiler_options!r} is not a JSON object, so --tune cannot add tuning to it; "
            "expected e.g. {\"mcpu\": \"cortex-a72\"}"
        )
    is_tuning = lambda key: str(key).strip().lower().replace("_", "-") == "tuning"  # noqa: E731
    tuning = next((v for k, v in current.items() if is_tuning(k)), None)
    merged = {k: v for k, v in current.items() if not is_tuning(k)}
    merged["tuning"] = {**(tuning if isinstance(tuning, dict) else {}), "trials": trials}
    return json.dumps(merged)


class _JobConsole:
    """The terminal while a job runs: one progress line per stage on stderr, and nothing else in between.

    TVM's and LLVM's C++ logging, torch's exporters, Python warnings and child processes write to file descriptors
    1 and 2 directly. While the job runs both point at a spool file, so that such output cannot interleave with the
    progress lines nor reach stdout (which carries only the result); each progress event first shows what was
    spooled as notes of its stage (with --quiet it is dropped).
    """

    MAX_NOTES = 4  # per stage event: enough to see what a library said, not a dump of its IR
    MAX_WIDTH = 300
    _ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.stage = "start"

    def __enter__(self) -> "_JobConsole":
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = {fd: os.dup(fd) for fd in (1, 2)}
        fd, path = tempfile.mkstemp(prefix="neocompile-output-")
        try:
            writer = os.open(path, os.O_WRONLY | os.O_APPEND)
            self._spool = open(path, "rb")
        finally:
            os.close(fd)
            os.unlink(path)
        for target in (1, 2):
            os.dup2(writer, target)
        os.close(writer)
        self.terminal = open(os.dup(self._saved[2]), "w", buffering=1, errors="backslashreplace")
        self._tail = b""
        return self

    def __exit__(self, *exc_info) -> None:
        self._show_spooled(final=True)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self._spool.close()
        self.terminal.close()

    def progress(self, event) -> None:
        """The pipeline's progress callback."""
        self.stage = event.stage
        self._show_spooled()
        if self.quiet or event.status == "start":
            return
        if event.status == "note":
            self._line(f"[{event.stage:<7}] ...    {event.detail}")
            return
        mark = "ok" if event.status == "done" else "FAILED"
        detail = event.detail if event.status == "done" else ""
        self._line(f"[{event.stage:<7}] {mark:<6} {event.seconds:7.2f}s  {detail}")

    def _line(self, text: str) -> None:
        print(text, file=self.terminal, flush=True)

    def _show_spooled(self, final: bool = False) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        data = self._tail + self._spool.read()
        if final:
            self._tail = b""
        else:  # an unfinished line waits for its end
            data, _, self._tail = data.rpartition(b"\n")
        lines: list[list] = []  # [text, repeats]
        for raw in re.split(rb"[\r\n]+", data):
            text = self._ANSI.sub("", raw.decode(errors="replace")).strip()
            if not text:
                continue
            if lines and lines[-1][0] == text:
                lines[-1][1] += 1
            else:
                lines.append([text, 1])
        if self.quiet or not lines:
            return
        for text, repeats in lines[: self.MAX_NOTES]:
            text = text if len(text) <= self.MAX_WIDTH else text[: self.MAX_WIDTH - 3] + "..."
            self._line(f"[{self.stage:<7}] ...    library output: {text}" + (f" ({repeats} times)" if repeats > 1 else ""))
        if len(lines) > self.MAX_NOTES:
            self._line(f"[{self.stage:<7}] ...    library output: {len(lines) - self.MAX_NOTES} more line(s) not shown")


def cmd_compile(args: argparse.Namespace) -> int:
    from .api import run_request

    started = time.perf_counter()
    request = build_request(args)
    with _JobConsole(args.quiet) as console:
        result = run_request(request, console.progress)
    if args.json:
        _emit(json.dumps({
            "CompilationJobName": result.job_name,
            "CreationTime": result.created_time,
            "S3ModelArtifacts": result.artifact_uri,
            "ArtifactDigest": result.artifact_digest,
            "Verification": result.verification,
            "Timings": result.timings,
            "DerivedDataInputConfig": result.derived_data_input_config,
            "Tuning": result.meta.get("Compilation", {}).get("Tuning"),
        }, indent=2))
    else:
        status = result.verification.get("status")
        _emit(result.artifact_uri)
        if not args.quiet:
            print(f"compiled in {time.perf_counter() - started:.1f}s; verification {status}"
                  + (f" ({result.verification.get('reason')})" if result.verification.get("reason") else ""), file=sys.stderr)
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from .targets import all_targets

    targets = list(all_targets().values())
    if args.native:
        # Most specific first: the device whose CPU features this machine covers most fully.
        native = sorted((t for t in targets if t.host_is_native() and t.accelerator is None),
                        key=lambda t: (-len(t.cpu.get("host_features") or []), t.name))
        _emit("\n".join(t.name for t in native))
        return 0
    rows = [t.summary() for t in targets]
    if args.json:
        _emit(json.dumps(rows, indent=2))
        return 0
    cols = ["TargetDevice", "Os", "Arch", "Accelerator", "DeviceType", "Triple", "Mcpu", "FloatAbi", "MinGlibc", "ReferenceOS"]
    table = [[str(r[c]) if r[c] is not None else "-" for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    _emit("\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in [cols, *table]))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from .datainput import TensorSpec
    from .runtime import Model
    from .verify import random_inputs

    feeds = {}
    for item in args.input or []:  # read before the (slower) package: a typo fails at once
        name, sep, path = item.partition("=")
        if not sep:
            raise ValidationError(f"--input: '{item}' is not NAME=FILE.npy")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValidationError(f"--input {item}: cannot read '{path}': {why}; expected an array saved with numpy.save (.npy)") from None
        if not isinstance(array, np.ndarray):
            raise ValidationError(f"--input {item}: '{path}' holds several arrays (.npz); expected one array saved with numpy.save (.npy)")
        feeds[name] = array
    model = Model(args.package, emulate=True, num_threads=args.threads)
    if not feeds:
        specs = [TensorSpec(n, d, tuple(model.input_shapes[n])) for n, d in zip(model.input_names, model.input_dtypes)]
        feeds = dict(zip(model.input_names, random_inputs(specs)))
    model.run(feeds)  # warm-up
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        outputs = model.run(feeds)
        times.append(time.perf_counter() - start)
    for name, out in zip(model.output_names, outputs):
        flat = out.reshape(-1)
        extra = f", argmax {int(flat.argmax())}" if out.dtype.kind == "f" and flat.size else ""
        _emit(f"{name}: shape {list(out.shape)} {out.dtype}, first {np.array2string(flat[:5], precision=4)}{extra}")
    how = (f"under {model.emulated_target.emulator['command']}, each run a new process" if model.emulated_target
           else "in process") + f", {model.num_threads} thread{'s' if model.num_threads > 1 else ''}"
    _emit(f"latency: median {sorted(times)[len(times) // 2] * 1e3:.3f} ms over {len(times)} runs "
          f"({'given' if args.input else 'seeded random'} inputs, {how})")
    return 0


def _tuning_cache(args: argparse.Namespace):
    from .tuning import TuningCache

    return TuningCache(args.cache)


def _target_key(name: str | None) -> str | None:
    """The cache's key for --target-device NAME (needs TVM: only imported when the flag is given)."""
    if not name:
        return None
    from .targets import get_target
    from .tuning.apply import target_key

    return target_key(get_target(name).target_dict({}))


def cmd_tuning_list(args: argparse.Namespace) -> int:
    from .tuning.cache import describe_target

    key = _target_key(args.target_device)
    cache = _tuning_cache(args)
    entries = [e for e in cache.entries() if key is None or e.target == key]
    rows = [{"Workload": e.workload_hash, "Kernel": e.task, "Target": describe_target(e.target), "BestUs": e.best_us,
             "Records": len(e.records), "Trials": e.trials, "Source": e.records[0].get("source") if e.records else None,
             "Updated": e.updated} for e in sorted(entries, key=lambda e: (e.target, e.task, e.workload_hash))]
    if args.json:
        _emit(json.dumps({"Cache": cache.location, "Kind": cache.kind, "Entries": rows}, indent=2))
        return 0
    if not rows:
        _emit(f"no tuning records in {cache.location}")
        return 0
    cols = ["Workload", "Kernel", "Target", "BestUs", "Records", "Trials", "Source", "Updated"]
    table = [[f"{r[c]:.2f}" if c == "BestUs" and r[c] is not None else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    _emit("\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in [cols, *table]))
    return 0


def cmd_tuning_export(args: argparse.Namespace) -> int:
    from .tuning.cache import write_export

    key = _target_key(args.target_device)
    cache = _tuning_cache(args)
    entries = [e for e in cache.entries() if key is None or e.target == key]
    write_export(entries, Path(args.file))
    summary = {"File": args.file, "Entries": len(entries), "Records": sum(len(e.records) for e in entries)}
    _emit(json.dumps(summary, indent=2) if args.json
          else f"exported {summary['Entries']} record set(s), {summary['Records']} record(s), from {cache.location} to {args.file}")
    return 0


def cmd_tuning_import(args: argparse.Namespace) -> int:
    from .tuning.cache import import_entries

    cache = _tuning_cache(args)
    entries = import_entries(cache, Path(args.file))
    summary = {"File": args.file, "Entries": len(entries), "Records": sum(len(e.records) for e in entries)}
    _emit(json.dumps(summary, indent=2) if args.json
          else f"imported {summary['Entries']} record set(s), {summary['Records']} record(s), from {args.file} into {cache.location}")
    return 0


def cmd_tuning_prune(args: argparse.Namespace) -> int:
    from .tuning.cache import prune

    removed = prune(_tuning_cache(args), older_than_days=args.older_than, target=_target_key(args.target_device))
    _emit(json.dumps({"Removed": [{"Workload": e.workload_hash, "Kernel": e.task} for e in removed]}, indent=2) if args.json
          else f"removed {len(removed)} record set(s)")
    return 0


def _add_tuning_commands(sub: Any) -> None:
    pt = sub.add_parser("tuning", help="manage the tuning cache (MetaSchedule records reused by every job)",
                        description="The tuning cache: $NEOCOMPILE_TUNING_CACHE (s3://bucket/prefix or a folder), else "
                                    "$NEOCOMPILE_CACHE/tuning, else ~/.cache/neocompile/tuning.")
    tsub = pt.add_subparsers(dest="tuning_command", required=True)

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = tsub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--cache", help="the cache to use instead of $NEOCOMPILE_TUNING_CACHE: s3://bucket/prefix or a folder")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.set_defaults(func=func, parser=p)
        return p

    p = add("list", cmd_tuning_list, "list the cached record sets: workload, kernel, target, best latency, trials, date")
    p.add_argument("--target-device", help="only the records for this TargetDevice's target")
    p = add("export", cmd_tuning_export, "write the cached record sets to FILE (JSON), e.g. to import them elsewhere")
    p.add_argument("file")
    p.add_argument("--target-device", help="only the records for this TargetDevice's target")
    p = add("import", cmd_tuning_import,
            "merge the record sets of FILE (from `tuning export`) into the cache; FILE is checked whole before anything is written")
    p.add_argument("file")
    p = add("prune", cmd_tuning_prune, "remove record sets: not updated for DAYS days, for one target, or all")
    p.add_argument("--older-than", type=_positive_int, metavar="DAYS", help="last updated more than DAYS days ago")
    p.add_argument("--target-device", help="the records for this TargetDevice's target")
    p.add_argument("--all", action="store_true", help="every record set (with the other flags: every one they select)")
    p.set_defaults(check=_check_prune_args)


def _check_prune_args(args: argparse.Namespace) -> None:
    if args.older_than is None and not args.target_device and not args.all:
        args.parser.error("give --older-than DAYS, --target-device NAME or --all")


def _add_service_commands(sub: Any) -> None:
    from .service import client

    ps = sub.add_parser("serve", help="serve SageMaker's compilation-job API (boto3, aws sagemaker --endpoint-url)",
                        description="Serve CreateCompilationJob, DescribeCompilationJob, ListCompilationJobs, "
                        "StopCompilationJob, DeleteCompilationJob and AddTags/ListTags/DeleteTags over SageMaker's wire "
                        "protocol, with local worker processes that run the compiles.")
    ps.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need access keys)")
    ps.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    _add_store_args(ps)
    ps.add_argument("--workers", type=int, default=1, help="local worker processes (default 1; 0: only the API)")
    ps.add_argument("--access-keys", help="AWS shared-credentials style file of access keys; when any are configured "
                    "(or NEOCOMPILE_ACCESS_KEY_ID/NEOCOMPILE_SECRET_ACCESS_KEY), every request must be SigV4-signed")
    ps.add_argument("--verbose", action="store_true", help="log every request")
    ps.set_defaults(func=cmd_serve)
    pw = sub.add_parser("worker", help="run compilation jobs from a job store (scale out: one per core group/machine)")
    _add_store_args(pw)
    pw.set_defaults(func=cmd_worker)
    client.add_commands(sub, _add_compile_args)


def _add_model_server_command(sub: Any) -> None:
    p = sub.add_parser("serve-model", help="serve a compiled package on SageMaker's inference container contract "
                       "(/ping, /execution-parameters, /invocations)",
                       description="Serve one compiled package as SageMaker hosting and batch transform expect of "
                       "a container: GET /ping, GET /execution-parameters, POST /invocations (text/csv, "
                       "application/json, application/jsonlines, application/x-npy). SageMaker runs `docker run IMAGE "
                       "serve`: the optional `serve` argument is accepted and ignored. No authentication; it binds "
                       "every interface by default as the contract needs (use --host 127.0.0.1 outside a container).")
    p.add_argument("serve", nargs="?", choices=["serve"], help=argparse.SUPPRESS)
    p.add_argument("--model-dir", default="/opt/ml/model", help="the unpacked ModelDataUrl: a package's files or one "
                   "package .tar.gz (default /opt/ml/model)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--host", default="0.0.0.0",
                   help="address to bind (default 0.0.0.0, as the container contract needs)")
    p.set_defaults(func=cmd_serve_model)


def cmd_serve_model(args: argparse.Namespace) -> int:
    from .service import model_server, server

    server.setup_logging()
    return model_server.serve(args.model_dir, args.host, args.port)


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="where the embedded SQLite job store lives (default $NEOCOMPILE_DATA_DIR, "
                   "else ~/.local/state/neocompile)")
    p.add_argument("--store", help="job store URL instead: postgresql://user:password@host/db (default $NEOCOMPILE_STORE_URL)")


def cmd_serve(args: argparse.Namespace) -> int:
    from .service import server

    server.setup_logging(args.verbose)
    return server.serve(args.host, args.port, args.data_dir, args.workers, args.store, args.access_keys)


def cmd_worker(args: argparse.Namespace) -> int:
    from .service import server

    server.setup_logging()
    return server.run_worker(args.data_dir, args.store)


def _main(argv: Sequence[str] | None, prog: str, subcommands: bool) -> int:
    if subcommands:
        parser = _Parser(prog=prog, description="neocompile: an open, self-hosted SageMaker Neo.")
        parser.add_argument("--version", action="version", version=f"neocompile {_version()}")
        sub = parser.add_subparsers(dest="command", required=True)
        pc = sub.add_parser("compile", help="compile a model archive (same as compile-model)", description=PROG_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_compile_args(pc)
        pt = sub.add_parser("targets", help="list the TargetDevices of the registry")
        pt.add_argument("--json", action="store_true")
        pt.add_argument("--native", action="store_true", help="only the devices whose code runs on this machine, best first")
        pt.set_defaults(func=cmd_targets)
        pr = sub.add_parser("run", help="run a compiled package on this machine and print its outputs")
        pr.add_argument("package", help="a package .tar.gz or its extracted folder")
        pr.add_argument("--input", action="append", help="NAME=FILE.npy (default: seeded random inputs)")
        pr.add_argument("--repeat", type=_positive_int, default=10, help="timed runs (default 10)")
        pr.add_argument("--threads", type=_positive_int,
                        help="threads per run (default: $NEOCOMPILE_NUM_THREADS, else $TVM_NUM_THREADS, else every usable core)")
        pr.set_defaults(func=cmd_run)
        _add_tuning_commands(sub)
        _add_service_commands(sub)
        _add_model_server_command(sub)
    else:
        parser = _Parser(prog=prog, description=PROG_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--version", action="version", version=f"neocompile {_version()}")
        _add_compile_args(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    try:
        try:
            args = parser.parse_args(argv)
            if getattr(args, "check", None):
                args.check(args)
        except _UsageError as exc:
            exc.parser.print_usage(sys.stderr)
            return _failure(prog, as_json, USAGE, "UsageError", str(exc), str(exc))
        as_json = bool(getattr(args, "json", False))
        try:
            return args.func(args)
        except NeoError as exc:
            return _failure(prog, as_json, FAILED, exc.category, str(exc), exc.reason)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return _failure(prog, as_json, 130, "Interrupted", "interrupted", None)
        except _StdoutClosed:
            raise
        except Exception as exc:  # a bug of ours, not the user's input: still one line, traceback on request
            if os.environ.get("NEOCOMPILE_DEBUG"):
                raise
            message = f"internal error ({type(exc).__name__}: {exc})"
            return _failure(prog, as_json, INTERNAL, "InternalFailure", message,
                            f"ServerError: {message}; rerun with NEOCOMPILE_DEBUG=1 for the traceback and report it")
    except _StdoutClosed:
        # Python would fail again flushing stdout at exit: point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return CLOSED_PIPE


def _failure(prog: str, as_json: bool, status: int, code: str, message: str, line: str | None) -> int:
    """The one error line on stderr; with --json also an error object on stdout, shaped as AWS error responses are."""
    if line is not None:
        print(f"{prog}: error: {line}", file=sys.stderr, flush=True)
    if as_json:
        kind = "Receiver" if status == INTERNAL else "Sender"
        _emit(json.dumps({"Error": {"Type": kind, "Code": code, "Message": message}, "ExitStatus": status}, indent=2))
    return status


def _version() -> str:
    from . import __version__

    return __version__


def compile_model_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``compile-model`` console script."""
    return _main(argv, "compile-model", subcommands=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neocompile`` console script."""
    return _main(argv, "neocompile", subcommands=True)


if __name__ == "__main__":
    sys.exit(main())
