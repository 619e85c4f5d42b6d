"""The wire: SageMaker's JSON 1.1 protocol over HTTP, as botocore speaks it.

Every call is ``POST /`` with ``X-Amz-Target: SageMaker.<Operation>`` and a JSON body; answers are JSON with an
``x-amzn-RequestId`` header, errors are ``{"__type": <code>, "message": <text>}`` with a 4xx status for anything the
client got wrong (botocore retries 5xx, so a 5xx means the server is at fault). In order, a request is: size-checked,
authenticated (SigV4, when access keys are configured), decoded, validated against botocore's model, then handed to
the domain (``jobs.JobService``).
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

from .. import __version__
from . import sigv4, validation
from .jobs import JobService, ServiceError

log = logging.getLogger("neocompile.service")

TARGET_PREFIX = "SageMaker."
CONTENT_TYPE = "application/x-amz-json-1.1"
#: The largest request body accepted. The biggest legal CreateCompilationJob (DataInputConfig 16 KiB, 50 tags of
#: 128 + 256 characters, ARNs up to 2 KiB each) is far below it.
MAX_BODY_BYTES = 1 << 20
#: A body over the limit is still read away up to this size before the 413 (beyond it the connection is just closed).
DISCARD_LIMIT_BYTES = 64 << 20


def operations(service: JobService) -> dict[str, Callable[..., dict[str, Any]]]:
    """The operations served, by name; anything else in SageMaker's model is UnknownOperationException.
    Create* operations also take the region of the request's signature (for the ARN)."""
    from .transforms import TransformService

    t = TransformService(service)
    return {
        "CreateCompilationJob": service.create,
        "DescribeCompilationJob": service.describe,
        "ListCompilationJobs": service.list,
        "StopCompilationJob": service.stop,
        "DeleteCompilationJob": service.delete,
        "CreateModel": t.create_model,
        "DescribeModel": t.describe_model,
        "ListModels": t.list_models,
        "DeleteModel": t.delete_model,
        "CreateTransformJob": t.create_transform_job,
        "DescribeTransformJob": t.describe_transform_job,
        "ListTransformJobs": t.list_transform_jobs,
        "StopTransformJob": t.stop_transform_job,
        "AddTags": service.add_tags,
        "ListTags": service.list_tags,
        "DeleteTags": service.delete_tags,
    }


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: JobService, keys: Mapping[str, str]):
        super().__init__(address, _Handler)
        self.service, self.keys = service, dict(keys)
        self.ops = operations(service)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"  # keep-alive: botocore reuses its connections
    # TCP_NODELAY: an answer goes out as two writes (headers, then body); with Nagle on, the body waits for the
    # client's delayed ACK of the headers, ~40 ms on every call of a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = f"neocompile/{__version__}"

    def log_message(self, fmt: str, *args: Any) -> None:  # the access log goes to the service logger, at debug
        log.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self) -> None:
        if self.path in ("/ping", "/health"):
            self._send(200, {"Status": "ok", "Version": __version__})
        else:
            self._error(ServiceError("UnknownOperationException", "neocompile's API is POST / with an X-Amz-Target "
                                     "header (SageMaker's JSON 1.1 protocol); GET /ping answers health checks", 404))

    def do_PUT(self) -> None:
        self._discard_body()
        self._error(ServiceError("UnknownOperationException", f"{self.command} is not served; use POST /", 405))

    do_DELETE = do_PATCH = do_PUT

    def do_POST(self) -> None:
        try:
            op, body = self._read_request()
            result, extra = self._call(op, body)
            self._send(200, result, extra)
        except ServiceError as exc:
            self._error(exc)
        except sigv4.AuthError as exc:
            self._error(ServiceError(exc.code, exc.message, exc.status))
        except Exception as exc:  # a server fault: 500 is honest here, and botocore retries it
            log.exception("internal error")
            self._error(ServiceError("InternalFailure", f"neocompile hit an internal error: {type(exc).__name__}: {exc}", 500))

    def _read_request(self) -> tuple[str, dict[str, Any]]:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise ServiceError("MissingContentLength", "A Content-Length header is required", 411)
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise ServiceError("SerializationException", f"Content-Length '{length_text}' is not a number") from None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            # Read it away (up to a bound) so the client, still sending, gets this answer instead of a reset.
            left = min(length, DISCARD_LIMIT_BYTES)
            while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                left -= len(chunk)
            raise ServiceError("RequestEntityTooLargeException", f"The request body is {length} bytes; neocompile accepts "
                               f"at most {MAX_BODY_BYTES} bytes per request", 413)
        raw = self.rfile.read(length)
        if self.path.split("?")[0] != "/":
            raise ServiceError("UnknownOperationException", f"Path '{self.path}' is not served; SageMaker's API is POST /", 404)
        target = self.headers.get("X-Amz-Target", "")
        if self.server.keys:
            sigv4.verify(self.command, self.path.split("?")[0], self.path.partition("?")[2], self.headers, raw,
                         self.server.keys)
        if not target.startswith(TARGET_PREFIX) or target == TARGET_PREFIX:
            raise ServiceError("UnknownOperationException", f"X-Amz-Target '{target}' names no operation; expected "
                               f"'{TARGET_PREFIX}<Operation>', e.g. SageMaker.DescribeCompilationJob")
        op = target[len(TARGET_PREFIX):]
        if op not in self.server.ops:
            raise ServiceError("UnknownOperationException", f"neocompile does not serve the operation '{op}'; it serves "
                               + ", ".join(sorted(self.server.ops)))
        try:
            body = json.loads(raw or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ServiceError("SerializationException", f"The request body is not valid JSON: {exc}") from None
        try:
            return op, validation.validate(op, body)
        except validation.RequestValidationError as exc:
            raise ServiceError("ValidationException", str(exc)) from None

    def _call(self, op: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """The operation's answer, and extra response headers. A Describe of a job also answers with its latest stage
        line (``x-neocompile-stage``): botocore hands every response header to its caller
        (``ResponseMetadata.HTTPHeaders``), so boto3 clients can show progress. One store read serves both."""
        service = self.server.service
        if op == "DescribeCompilationJob":
            job = service.get(body["CompilationJobName"])
            return service.describe_record(job), _stage_header(job.stage)
        if op == "DescribeTransformJob":
            transforms = self.server.ops["DescribeTransformJob"].__self__
            job = transforms.transform_job(body["TransformJobName"])
            return transforms.describe_transform_record(job), _stage_header(job.stage)
        func = self.server.ops[op]
        return (func(body, sigv4.region_of(self.headers)) if op.startswith("Create") else func(body)), {}

    def _error(self, exc: ServiceError) -> None:
        if exc.status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        self._send(exc.status, {"__type": exc.code, "message": exc.message})

    def _send(self, status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _discard_body(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        else:
            self.close_connection = True


def _stage_header(line: str) -> dict[str, str]:
    return {"x-neocompile-stage": line.encode("ascii", "replace").decode()[:1000].replace("\n", " ")} if line else {}
