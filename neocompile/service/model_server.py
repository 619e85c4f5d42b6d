"""``neocompile serve-model``: SageMaker's inference container contract for one compiled package.

SageMaker (hosting and batch transform) runs ``docker run <image> serve`` with the model's ``ModelDataUrl`` unpacked
in ``/opt/ml/model`` and talks to port 8080: ``GET /ping`` (200 once the model is loaded), ``GET
/execution-parameters`` (how batch transform should batch), ``POST /invocations`` (Content-Type/Accept as in
:mod:`.inference`). The model is loaded before the port opens, so a ping that connects finds it ready.

The server has no authentication: it answers inferences on the one package and nothing else, and binds every
interface by default because the contract requires port 8080 reachable from outside the container. Outside a
container, give ``--host 127.0.0.1``.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import PackageError
from ..runtime import META
from .inference import InferenceError, Predictor

log = logging.getLogger("neocompile.model_server")

MODEL_DIR = "/opt/ml/model"
MIB = 1024 * 1024
DRAIN_LIMIT = 256 * MIB


def find_package(model_dir: str | Path) -> Path:
    """The package in ``model_dir``: its files unpacked there (SageMaker unpacks ModelDataUrl's tarball), or a single
    package ``.tar.gz`` inside it."""
    folder = Path(model_dir)
    if (folder / META).is_file():
        return folder
    if not folder.is_dir():
        raise PackageError(f"--model-dir {folder} is not a folder; expected the folder SageMaker unpacks ModelDataUrl "
                           f"into (a package's files, or one package .tar.gz)")
    archives = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".tar.gz", ".tgz", ".tar")))
    if len(archives) == 1:
        return archives[0]
    names = sorted(p.name for p in folder.iterdir())[:10]
    raise PackageError(f"--model-dir {folder} holds {'no' if not archives else len(archives)} package archives and no "
                       f"{META} ({', '.join(names) or 'nothing'}); expected a package's files or exactly one package "
                       ".tar.gz (compile-model's output)")


class ModelServer(ThreadingHTTPServer):
    """The inference HTTP server: one :class:`Predictor`, a thread per connection."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], predictor: Predictor):
        self.predictor = predictor
        self.max_payload = predictor.execution_parameters["MaxPayloadInMB"] * MIB  # 0: no limit, as SageMaker means
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"  # keep-alive: batch transform sends request after request

    def do_GET(self) -> None:
        if self.path == "/ping":
            self._reply(HTTPStatus.OK, b"", "text/plain")
        elif self.path == "/execution-parameters":
            params = self.server.predictor.execution_parameters
            self._reply(HTTPStatus.OK, json.dumps(params).encode(), "application/json")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such path {self.path!r}; the paths are GET /ping, "
                        "GET /execution-parameters, POST /invocations")

    def do_POST(self) -> None:
        if self.path != "/invocations":
            self._error(HTTPStatus.NOT_FOUND, f"no such path {self.path!r}; inferences go to POST /invocations")
            return
        try:
            body = self._body()
            answer, kind = self.server.predictor.invoke(body, self.headers.get("Content-Type"),
                                                        self.headers.get("Accept"))
        except InferenceError as exc:
            self._error(exc.status, str(exc))
        except Exception as exc:  # the model or a bug of ours: the client gets a 500, the log the traceback
            log.exception("POST /invocations failed")
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"inference failed ({type(exc).__name__}: {exc})")
        else:
            self._reply(HTTPStatus.OK, answer, kind)

    def _body(self) -> bytes:
        """The request body, refused with 413 past the payload limit (read in full, or chunk by chunk: SageMaker
        streams with chunked encoding when MaxPayloadInMB is 0)."""
        limit = self.server.max_payload or None
        too_large = InferenceError(413, f"the request body is over MaxPayloadInMB ({limit and limit // MIB} MB); send "
                                        "fewer records per request (SAGEMAKER_MAX_PAYLOAD_IN_MB sets the limit)")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts, size = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    length = int(line.split(b";", 1)[0], 16)
                except ValueError:
                    self.close_connection = True
                    raise InferenceError(400, f"malformed chunk size line {line[:40]!r}") from None
                if length == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(parts)
                size += length
                if limit and size > limit:
                    self.close_connection = True  # the rest of the body is still on the wire
                    raise too_large
                parts.append(self.rfile.read(length))
                self.rfile.readline(1024)  # the chunk's CRLF
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise InferenceError(400, f"Content-Length {self.headers['Content-Length']!r} is not a number") from None
        if limit and length > limit:
            # Read the body away (when it is not absurd) so the client gets the 413, not a reset connection.
            if length <= DRAIN_LIMIT:
                while length > 0:
                    length -= len(self.rfile.read(min(length, MIB))) or length
            else:
                self.close_connection = True
            raise too_large
        return self.rfile.read(length)

    def _error(self, status: int, message: str) -> None:
        self._reply(status, json.dumps({"error": message}).encode(), "application/json")

    def _reply(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def serve(model_dir: str | Path = MODEL_DIR, host: str = "0.0.0.0", port: int = 8080, out=sys.stdout) -> int:
    """Load the package in ``model_dir``, then serve it until SIGTERM or SIGINT."""
    predictor = Predictor(find_package(model_dir))
    server = ModelServer((host, port), predictor)
    print(f"neocompile serve-model: listening on {server.url}", file=out, flush=True)
    print(f"  model: {predictor.model.source} (inputs {predictor.model.input_shapes}); execution parameters: "
          f"{json.dumps(predictor.execution_parameters)}", file=out, flush=True)

    def shutdown(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
