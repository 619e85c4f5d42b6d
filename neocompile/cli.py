"""Command line: ``compile-model`` (shaped after ``aws sagemaker create-compilation-job``) and ``neocompile``."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import NeoError, ValidationError

PROG_HELP = """Compile a trained model archive (model.tar.gz) for a SageMaker Neo TargetDevice or TargetPlatform.

Example:
  compile-model --framework ONNX --model-uri model.tar.gz --data-input-config '{"data":[1,3,224,224]}' \\
      --target-device ml_c5 --output-location ./out
writes ./out/model-ml_c5.tar.gz. URIs may be s3://bucket/key, file:// URIs or plain paths.
"""


def _add_compile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-uri", "--s3-uri", dest="model_uri", help="the model.tar.gz: s3://bucket/key, file:///path or a path")
    p.add_argument("--framework", help="ONNX | PYTORCH (TENSORFLOW, KERAS, MXNET, TFLITE, XGBOOST: later releases)")
    p.add_argument("--framework-version", help="InputConfig.FrameworkVersion (recorded in the manifest)")
    p.add_argument("--data-input-config", help='input names and shapes, e.g. \'{"data":[1,3,224,224]}\' (PyTorch also [[1,3,224,224]])')
    p.add_argument("--target-device", help="a TargetDevice, see `neocompile targets`")
    p.add_argument("--target-platform", help="Os=LINUX,Arch=ARM64[,Accelerator=NVIDIA] or the JSON structure (instead of --target-device)")
    p.add_argument("--compiler-options", help="JSON (single quotes tolerated): mcpu, mattr, dtype, gpu-code, verify, ...")
    p.add_argument("--output-location", "--s3-output-location", dest="output_location", help="folder or s3://bucket/prefix for the package")
    p.add_argument("--job-name", "--compilation-job-name", dest="job_name", help="CompilationJobName (recorded in the manifest)")
    p.add_argument("--max-runtime-seconds", type=int, help="stop the job after this many seconds (StoppingCondition.MaxRuntimeInSeconds)")
    p.add_argument("--cli-input-json", help="a CreateCompilationJob request body: JSON text or file://request.json")
    p.add_argument("--quiet", action="store_true", help="no per-stage progress on stderr")
    p.add_argument("--json", action="store_true", help="print the result (artifact, digest, verification, timings) as JSON")


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
        raise ValidationError(f"--cli-input-json: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    return body


def build_request(args: argparse.Namespace):
    """Merge --cli-input-json with explicit flags (flags win, as in the AWS CLI)."""
    from .pipeline import CompilationRequest

    if args.cli_input_json:
        req = CompilationRequest.from_api(_read_cli_input_json(args.cli_input_json))
    else:
        missing = [flag for flag, value in (("--model-uri", args.model_uri), ("--framework", args.framework), ("--output-location", args.output_location)) if not value]
        if missing:
            raise ValidationError(f"missing required argument(s): {', '.join(missing)} (or give --cli-input-json)")
        req = CompilationRequest(model_uri=args.model_uri, framework=args.framework, output_location=args.output_location)
    for field in ("model_uri", "framework", "output_location", "data_input_config", "compiler_options", "job_name", "framework_version", "max_runtime_seconds"):
        value = getattr(args, field)
        if value is not None:
            setattr(req, field, value)
    if args.target_device:
        req.target_device, req.target_platform = args.target_device, None
    if args.target_platform:
        req.target_platform, req.target_device = _parse_platform(args.target_platform), None
    return req


def _progress(quiet: bool):
    def show(event) -> None:
        if quiet or event.status == "start":
            return
        if event.status == "note":
            print(f"[{event.stage:<7}] ...    {event.detail}", file=sys.stderr, flush=True)
            return
        mark = "ok" if event.status == "done" else "FAILED"
        detail = event.detail if event.status == "done" else ""
        print(f"[{event.stage:<7}] {mark:<6} {event.seconds:7.2f}s  {detail}", file=sys.stderr, flush=True)

    return show


def cmd_compile(args: argparse.Namespace) -> int:
    from .api import run_request

    started = time.perf_counter()
    request = build_request(args)
    result = run_request(request, _progress(args.quiet))
    if args.json:
        print(json.dumps({
            "CompilationJobName": result.job_name,
            "S3ModelArtifacts": result.artifact_uri,
            "ArtifactDigest": result.artifact_digest,
            "Verification": result.verification,
            "Timings": result.timings,
            "DerivedDataInputConfig": result.derived_data_input_config,
        }, indent=2))
    else:
        status = result.verification.get("status")
        print(result.artifact_uri)
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
        print("\n".join(t.name for t in native))
        return 0
    rows = [t.summary() for t in targets]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["TargetDevice", "Os", "Arch", "Accelerator", "DeviceType", "Triple", "Mcpu", "FloatAbi", "CrossCompiler"]
    table = [[str(r[c]) if r[c] is not None else "-" for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from .datainput import TensorSpec
    from .runtime import Model
    from .verify import random_inputs

    model = Model(args.package, emulate=True)
    if args.input:
        feeds = {}
        for item in args.input:
            name, sep, path = item.partition("=")
            if not sep:
                raise ValidationError(f"--input: '{item}' is not NAME=FILE.npy")
            feeds[name] = np.load(path)
    else:
        specs = [TensorSpec(n, d, tuple(model.input_shapes[n])) for n, d in zip(model.input_names, model.input_dtypes)]
        feeds = dict(zip(model.input_names, random_inputs(specs)))
    model.run(feeds)  # warm-up
    times = []
    for _ in range(max(args.repeat, 1)):
        start = time.perf_counter()
        outputs = model.run(feeds)
        times.append(time.perf_counter() - start)
    for name, out in zip(model.output_names, outputs):
        flat = out.reshape(-1)
        extra = f", argmax {int(flat.argmax())}" if out.dtype.kind == "f" and flat.size else ""
        print(f"{name}: shape {list(out.shape)} {out.dtype}, first {np.array2string(flat[:5], precision=4)}{extra}")
    how = (f"under {model.emulated_target.emulator['command']}, each run a new process" if model.emulated_target
           else "in process")
    print(f"latency: median {sorted(times)[len(times) // 2] * 1e3:.3f} ms over {len(times)} runs "
          f"({'given' if args.input else 'seeded random'} inputs, {how})")
    return 0


def _main(argv: Sequence[str] | None, prog: str, subcommands: bool) -> int:
    if subcommands:
        parser = argparse.ArgumentParser(prog=prog, description="neocompile: an open, self-hosted SageMaker Neo.")
        parser.add_argument("--version", action="version", version=f"neocompile {_version()}")
        sub = parser.add_subparsers(dest="command", required=True)
        pc = sub.add_parser("compile", help="compile a model archive (same as compile-model)", description=PROG_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_compile_args(pc)
        pc.set_defaults(func=cmd_compile)
        pt = sub.add_parser("targets", help="list the TargetDevices of the registry")
        pt.add_argument("--json", action="store_true")
        pt.add_argument("--native", action="store_true", help="only the devices whose code runs on this machine, best first")
        pt.set_defaults(func=cmd_targets)
        pr = sub.add_parser("run", help="run a compiled package on this machine and print its outputs")
        pr.add_argument("package", help="a package .tar.gz or its extracted folder")
        pr.add_argument("--input", action="append", help="NAME=FILE.npy (default: seeded random inputs)")
        pr.add_argument("--repeat", type=int, default=10, help="timed runs (default 10)")
        pr.set_defaults(func=cmd_run)
    else:
        parser = argparse.ArgumentParser(prog=prog, description=PROG_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--version", action="version", version=f"neocompile {_version()}")
        _add_compile_args(parser)
        parser.set_defaults(func=cmd_compile)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except NeoError as exc:
        print(f"{prog}: error: {exc.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours, not the user's input: still one line, traceback on request
        if os.environ.get("NEOCOMPILE_DEBUG"):
            raise
        print(f"{prog}: error: ServerError: internal error ({type(exc).__name__}: {exc}); "
              "rerun with NEOCOMPILE_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return 3


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
