"""What a worker does with a transform job: find the input objects, bring up the model, stream each object through
``batch.transform_stream`` and store ``<relative name>.out`` under S3OutputPath.

The model is served by the built-in inference runtime (``inference.Predictor``: the package at the model's
``PrimaryContainer.ModelDataUrl``, in this process) or, when the model names only ``Image``, by that container
image run with the local container engine (docker or podman) on SageMaker's inference contract.

Every object is transformed into a local temporary file and stored (atomically) only when all of it succeeded, so a
file that failed or was stopped has no ``.out``; a failed object does not stop the others, but the job fails naming
the first failed object and its record.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .. import storage
from ..errors import JobStopped, NeoError

log = logging.getLogger("neocompile.worker")

INPUT_FIELD = "TransformInput.DataSource.S3DataSource.S3Uri"
OUTPUT_FIELD = "TransformOutput.S3OutputPath"


class TransformFailed(NeoError):
    """One or more input objects could not be transformed (the others were)."""

    category = "TransformError"


def run(request: dict[str, Any], model: dict[str, Any], should_stop: Callable[[], str | None],
        note: Callable[[str, str], None]) -> dict[str, int]:
    """Run a CreateTransformJob ``request`` with the CreateModel body ``model``. ``should_stop`` returns a reason to
    end (checked between mini-batches); ``note(stage, text)`` reports progress. Returns counts of files and records."""
    from . import batch

    spec = batch.TransformSpec.from_request(request)
    objects = input_objects(request["TransformInput"]["DataSource"]["S3DataSource"])
    out_root = request["TransformOutput"]["S3OutputPath"].rstrip("/")
    note("input", f"{len(objects)} object(s)")
    work = Path(tempfile.mkdtemp(prefix="neocompile-transform-"))
    failures: list[str] = []
    records = 0
    try:
        with open_model(model, request, work) as invoke:
            concurrency = max(1, int(request.get("MaxConcurrentTransforms") or 1))
            for i, (uri, relative) in enumerate(objects, 1):
                if should_stop():
                    raise JobStopped(should_stop() or "stopped")
                started = time.monotonic()
                tmp = work / "out.part"
                try:
                    with storage.open_stream(uri, INPUT_FIELD) as source, open(tmp, "wb") as sink:
                        count = batch.transform_stream(spec, source, sink, invoke, should_stop=lambda: bool(should_stop()),
                                                       concurrency=concurrency)
                except batch.Stopped:
                    raise JobStopped(should_stop() or "stopped") from None
                except batch.RecordError as exc:
                    failures.append(f"{uri}: {exc}")
                    note("transform", f"object {i}/{len(objects)} {relative} FAILED: {exc}")
                    continue
                folder, _, name = f"{out_root}/{relative}".rpartition("/")
                storage.put(tmp, folder, f"{name}.out", OUTPUT_FIELD)
                records += count
                note("transform", f"object {i}/{len(objects)} {relative}: {count} records in "
                                  f"{time.monotonic() - started:.1f} s -> {name}.out")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        more = f" (and {len(failures) - 1} more object(s))" if len(failures) > 1 else ""
        raise TransformFailed(f"{len(failures)} of {len(objects)} input object(s) failed; first: {failures[0]}{more}")
    return {"objects": len(objects), "records": records}


def input_objects(source: dict[str, Any]) -> list[tuple[str, str]]:
    """(URI, name relative to the prefix) of every input object, S3Prefix or ManifestFile."""
    uri = source["S3Uri"]
    if source.get("S3DataType", "S3Prefix") == "S3Prefix":
        found = storage.list_prefix(uri, INPUT_FIELD)
    elif source["S3DataType"] == "ManifestFile":
        found = _manifest(uri)
    else:
        raise NeoError(f"S3DataType '{source['S3DataType']}' is not supported by neocompile's batch transform; "
                       "expected S3Prefix or ManifestFile")
    if not found:
        raise NeoError(f'No S3 objects found under S3 URL "{uri}" given in input data source')
    return found


def _manifest(uri: str) -> list[tuple[str, str]]:
    """A manifest: ``[{"prefix": "s3://bucket/base/"}, "relative/key1", ...]`` (SageMaker's ManifestFile format)."""
    with storage.open_stream(uri, INPUT_FIELD) as f:
        try:
            entries = json.loads(f.read())
        except (ValueError, UnicodeDecodeError) as exc:
            raise NeoError(f"{INPUT_FIELD} '{uri}' is not a manifest file (JSON): {exc}") from None
    if not (isinstance(entries, list) and entries and isinstance(entries[0], dict) and "prefix" in entries[0]
            and all(isinstance(e, str) for e in entries[1:])):
        raise NeoError(f"{INPUT_FIELD} '{uri}': a manifest is a JSON array [{{\"prefix\": \"s3://bucket/base/\"}}, "
                       "\"relative/key\", ...]")
    prefix = entries[0]["prefix"]
    base = prefix if prefix.endswith("/") else prefix + "/"
    return [(base + rel, rel) for rel in entries[1:]]


def _invocation_error():
    from .batch import InvokeError

    return InvokeError


class InvocationError(_invocation_error()):
    """A call to the model failed (the model refused the payload, or its container failed after the retries)."""


class open_model:
    """Context manager giving ``invoke(payload, content_type, accept) -> bytes`` for the job's model."""

    def __init__(self, model: dict[str, Any], request: dict[str, Any], work: Path):
        container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
        self.container, self.request, self.work = container, request, work
        self.engine: _Container | None = None

    def __enter__(self) -> Callable[[bytes, str | None, str | None], bytes]:
        url = self.container.get("ModelDataUrl")
        image = self.container.get("Image")
        if image and not _is_neocompile_image(image):
            self.engine = _Container(image, url, self.request, self.work)
            return self.engine.invoke
        from .inference import InferenceError, Predictor

        package = storage.fetch(url, self.work / "model", "PrimaryContainer.ModelDataUrl")
        predictor = Predictor(package)

        def invoke(payload: bytes, content_type: str | None, accept: str | None) -> bytes:
            try:
                return predictor.invoke(payload, content_type, accept)[0]
            except InferenceError as exc:
                raise InvocationError(f"the model refused the request ({exc.status}): {exc}") from None

        return invoke

    def __exit__(self, *exc: Any) -> None:
        if self.engine is not None:
            self.engine.close()


def _is_neocompile_image(image: str) -> bool:
    """The image of docker/ (what DescribeCompilationJob names as InferenceImage) is the built-in runtime itself."""
    return image.split("/")[-1].split(":")[0] == "neocompile" and not os.environ.get("NEOCOMPILE_FORCE_CONTAINERS")


class _Container:
    """A model image on SageMaker's inference contract, run with docker or podman: ``serve``, GET /ping,
    GET /execution-parameters, POST /invocations on port 8080, the model under /opt/ml/model."""

    def __init__(self, image: str, model_url: str | None, request: dict[str, Any], work: Path):
        # NEOCOMPILE_CONTAINER_ENGINE names the engine (a command or a path); unset: docker, else podman.
        wanted = os.environ.get("NEOCOMPILE_CONTAINER_ENGINE")
        engine = shutil.which(wanted) if wanted else shutil.which("docker") or shutil.which("podman")
        if engine is None:
            looked = f"'{wanted}' (NEOCOMPILE_CONTAINER_ENGINE)" if wanted else "docker or podman"
            raise NeoError(f"PrimaryContainer.Image '{image}' must run in a container engine, and this worker has none "
                           f"({looked} not found). Give the model a neocompile package as ModelDataUrl without Image to "
                           "use the built-in runtime, or run the worker where docker is installed")
        self.engine, self.id = engine, None
        model_dir = work / "opt-ml-model"
        model_dir.mkdir()
        if model_url:  # unpacked as SageMaker does, with neocompile's safe extractor
            from .. import archive

            archive.extract(storage.fetch(model_url, work / "model", "PrimaryContainer.ModelDataUrl"), model_dir)
        cfg = request.get("ModelClientConfig", {})
        self.timeout = cfg.get("InvocationsTimeoutInSeconds", 600)
        self.retries = cfg.get("InvocationsMaxRetries", 3)
        env = {"SAGEMAKER_BATCH": "true", **{k: str(v) for k, v in request.get("Environment", {}).items()}}
        for key, var in (("MaxPayloadInMB", "SAGEMAKER_MAX_PAYLOAD_IN_MB"), ("MaxConcurrentTransforms",
                         "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS")):
            if key in request:
                env[var] = str(request[key])
        if "BatchStrategy" in request:
            env["SAGEMAKER_BATCH_STRATEGY"] = {"SingleRecord": "SINGLE_RECORD", "MultiRecord": "MULTI_RECORD"}[request["BatchStrategy"]]
        cmd = [engine, "run", "-d", "--rm", "-p", "127.0.0.1::8080", "-v", f"{model_dir}:/opt/ml/model:ro"]
        for k, v in env.items():
            cmd += ["-e", f"{k}={v}"]
        done = subprocess.run(cmd + [image, "serve"], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise NeoError(f"PrimaryContainer.Image '{image}' did not start: {done.stderr.strip()[-500:]}")
        self.id = done.stdout.strip()
        port = subprocess.run([engine, "port", self.id, "8080/tcp"], capture_output=True, text=True).stdout.split(":")[-1]
        self.port = int(port.strip().splitlines()[0])
        self._wait_ready(image)

    def _wait_ready(self, image: str, seconds: float = 120) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                status, _ = self._call("GET", "/ping", None, {}, 2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise NeoError(f"PrimaryContainer.Image '{image}' did not answer GET /ping on port 8080 within {seconds:g} s")

    def _call(self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def invoke(self, payload: bytes, content_type: str | None, accept: str | None) -> bytes:
        headers = {k: v for k, v in (("Content-Type", content_type), ("Accept", accept)) if v}
        last = ""
        for _ in range(self.retries + 1):
            try:
                status, body = self._call("POST", "/invocations", payload, headers, self.timeout)
            except OSError as exc:  # timeouts included
                last = f"no answer within {self.timeout} s ({exc})"
                continue
            if status == 200:
                return body
            last = f"HTTP {status}: {body[:300].decode(errors='replace')}"
            if status < 500:
                break  # the payload is wrong: a retry would not change the answer
        raise InvocationError(f"POST /invocations failed: {last}")

    def close(self) -> None:
        if self.id:
            subprocess.run([self.engine, "rm", "-f", self.id], capture_output=True)
