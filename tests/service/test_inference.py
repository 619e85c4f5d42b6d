"""The /invocations contract on real compiled packages: an image CNN compiled for batch 1, an XGBoost forest (any
number of rows) and a two-input, two-output model compiled for batch 2; every content type in and out, the errors a
client reads, and a real ``neocompile serve-model`` process answering SageMaker's container requests."""
from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

import neocompile
from neocompile import modelzoo
from neocompile.errors import ValidationError
from neocompile.runtime import Model
from neocompile.service.inference import InferenceError, Predictor, execution_parameters
from tests import xgboost_models as xm
from tests.models import SMALL_CONFIG, small_onnx_archive


def _compile(tmp: Path, archive: Path, framework: str, config) -> Path:
    return Path(neocompile.compile_model(str(archive), framework, str(tmp / "out"), config,
                                         target_device="ml_c4").artifact_uri)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> Path:
    """A small image CNN compiled for input data[1, 3, 32, 32] -> prob[1, 10]."""
    tmp = tmp_path_factory.mktemp("cnn")
    return _compile(tmp, small_onnx_archive(tmp), "ONNX", SMALL_CONFIG)


@pytest.fixture(scope="module")
def forest(tmp_path_factory) -> Path:
    """An XGBoost binary:logistic model: data[N, 6] -> one probability per row."""
    tmp = tmp_path_factory.mktemp("xgboost")
    booster = xm.train("binary:logistic", rounds=6)
    archive = modelzoo.write_archive(tmp / "xgb.tar.gz", {"xgboost-model": bytes(booster.save_raw("json"))})
    return _compile(tmp, archive, "XGBOOST", None)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    """Inputs a[2, 4], b[2, 4] -> outputs sum = a + b [2, 4] and peak = max(a) per row [2]."""
    tmp = tmp_path_factory.mktemp("pair")
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]),
         helper.make_node("ReduceMax", ["a"], ["peak"], keepdims=0, axes=[1])],
        "pair", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4]) for n in "ab"],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("peak", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    archive = modelzoo.onnx_archive(tmp / "pair.tar.gz", model)
    return _compile(tmp, archive, "ONNX", {"a": [2, 4], "b": [2, 4]})


def _rows(k: int, seed: int = 5) -> np.ndarray:
    return xm.data(k, seed=seed, missing=0.2)


def _csv(rows: np.ndarray) -> bytes:
    """Rows as CSV, NaN as an empty field (a missing value), floats written exactly."""
    return "".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) + "\n" for row in rows).encode()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _images(k: int) -> np.ndarray:
    return np.random.default_rng(k).standard_normal((k, 3, 32, 32)).astype(np.float32)


# -- decoding, batching, encoding -------------------------------------------------------------------------------------
def test_csv_rows_give_one_line_per_record_equal_to_the_model_with_missing_values(forest):
    rows = _rows(7)
    body, kind = Predictor(forest).invoke(_csv(rows), "text/csv", None)
    assert kind == "text/csv"
    lines = body.decode().splitlines()
    assert len(lines) == 7 and body.endswith(b"\n")
    got = np.array([float(line) for line in lines], dtype=np.float32)
    np.testing.assert_array_equal(got, Model(forest).run(rows)[0])  # CSV floats read back to the exact float32


def test_a_fixed_batch_runs_records_in_chunks_and_drops_the_padding(cnn):
    images = _images(3)
    model, predictor = Model(cnn), Predictor(cnn)
    assert predictor.batch == 1 and model.input_shapes["data"] == [1, 3, 32, 32]
    want = np.concatenate([model.run(images[i:i + 1])[0] for i in range(3)])
    csv = b"\n".join(",".join(map(repr, image.ravel().tolist())).encode() for image in images)  # one flat row each
    body, kind = predictor.invoke(csv, "text/csv; charset=utf-8", "text/csv")
    got = np.array([line.split(",") for line in body.decode().splitlines()], dtype=np.float32)
    assert kind == "text/csv" and got.shape == (3, 10)
    np.testing.assert_array_equal(got, want)
    # JSON records in the record's own shape [3, 32, 32]: one entry (the 10 probabilities) per record.
    body, kind = predictor.invoke(json.dumps(images.tolist()).encode(), "application/json", None)
    np.testing.assert_array_equal(np.array(json.loads(body), dtype=np.float32), want)


def test_json_instances_and_json_lines_round_trip(forest):
    rows = _rows(5)
    want = Model(forest).run(rows)[0]
    predictor = Predictor(forest)
    records = [[None if np.isnan(v) else float(v) for v in row] for row in rows]  # null: a missing value
    for body in (json.dumps(records), json.dumps({"instances": records})):
        out, kind = predictor.invoke(body.encode(), "application/json", None)
        assert kind == "application/json"
        np.testing.assert_array_equal(np.array(json.loads(out), dtype=np.float32), want)  # one number per record
    lines = "\n".join(json.dumps(r) for r in records) + "\n"
    out, kind = predictor.invoke(lines.encode(), "application/jsonlines", None)
    assert kind == "application/jsonlines"
    got = [json.loads(line) for line in out.decode().splitlines()]
    assert len(got) == 5
    np.testing.assert_array_equal(np.array(got, dtype=np.float32), want)


def test_npy_whole_batches_and_single_records(cnn, forest):
    images = _images(3)
    model, predictor = Model(cnn), Predictor(cnn)
    out, kind = predictor.invoke(_npy(images), "application/x-npy", None)
    assert kind == "application/x-npy"
    want = np.concatenate([model.run(images[i:i + 1])[0] for i in range(3)])
    np.testing.assert_allclose(np.load(io.BytesIO(out)), want, rtol=1e-6)
    # The package's own input shape [1, 3, 32, 32] is used as is, and so is a bare record [3, 32, 32].
    for array in (images[:1], images[0]):
        got = np.load(io.BytesIO(predictor.invoke(_npy(array), "application/x-npy", None)[0]))
        np.testing.assert_allclose(got, want[:1], rtol=1e-6)
    rows = _rows(4)
    got = np.load(io.BytesIO(Predictor(forest).invoke(_npy(rows), "application/x-npy", "application/x-npy")[0]))
    np.testing.assert_array_equal(got, Model(forest).run(rows)[0])


@pytest.mark.parametrize("accept,kind", [(None, "application/json"), ("*/*", "application/json"),
                                         ("text/csv", "text/csv"), ("application/jsonlines", "application/jsonlines"),
                                         ("image/png, application/x-npy", "application/x-npy"),
                                         ("application/x-jsonlines", "application/jsonlines")])
def test_accept_picks_the_encoding_and_defaults_to_the_request_family(forest, accept, kind):
    rows = _rows(3)
    out, got = Predictor(forest).invoke(json.dumps(np.nan_to_num(rows).tolist()).encode(), "application/json", accept)
    assert got == kind
    want = Model(forest).run(np.nan_to_num(rows))[0]
    values = {"application/json": lambda: json.loads(out), "text/csv": lambda: out.decode().split(),
              "application/jsonlines": lambda: [json.loads(x) for x in out.decode().splitlines()],
              "application/x-npy": lambda: np.load(io.BytesIO(out))}[kind]()
    np.testing.assert_array_equal(np.array(values, dtype=np.float32), want)


def test_two_inputs_and_two_outputs(pair):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.full((3, 4), 0.5, dtype=np.float32)
    predictor = Predictor(pair)
    assert predictor.batch == 2  # 3 records: two runs of 2, the last padded
    want_sum, want_peak = a + b, a.max(axis=1)
    body = json.dumps({"inputs": {"a": a.tolist(), "b": b.tolist()}}).encode()
    out, kind = predictor.invoke(body, "application/json", None)
    entries = json.loads(out)
    assert kind == "application/json" and len(entries) == 3 and set(entries[0]) == {"sum", "peak"}
    np.testing.assert_array_equal([e["sum"] for e in entries], want_sum)
    np.testing.assert_array_equal([e["peak"] for e in entries], want_peak)
    # Records as objects keyed by input name; CSV lines hold each record's outputs in output order.
    lines = "".join(json.dumps({"a": x.tolist(), "b": y.tolist()}) + "\n" for x, y in zip(a, b))
    out, _ = predictor.invoke(lines.encode(), "application/jsonlines", "text/csv")
    np.testing.assert_array_equal([[float(v) for v in line.split(",")] for line in out.decode().splitlines()],
                                  np.concatenate([want_sum, want_peak[:, None]], axis=1))
    buffer = io.BytesIO()
    np.savez(buffer, a=a, b=b)
    out, kind = predictor.invoke(buffer.getvalue(), "application/x-npz", None)
    assert kind == "application/x-npz"
    with np.load(io.BytesIO(out)) as got:
        np.testing.assert_array_equal(got["sum"], want_sum)
        np.testing.assert_array_equal(got["peak"], want_peak)
    with pytest.raises(InferenceError) as err:
        predictor.invoke(b"1,2,3,4\n", "text/csv", None)
    assert err.value.status == 415 and "2 inputs (a, b)" in str(err.value) and "application/x-npz" in str(err.value)
    with pytest.raises(InferenceError) as err:
        predictor.invoke(buffer.getvalue(), "application/x-npz", "application/x-npy")
    assert err.value.status == 406 and "ask for application/x-npz" in str(err.value)
    with pytest.raises(InferenceError) as err:
        predictor.invoke(json.dumps({"inputs": {"a": a.tolist()}}).encode(), "application/json", None)
    assert err.value.status == 400 and "missing ['b']" in str(err.value)


# -- what a client gets wrong -----------------------------------------------------------------------------------------
GOOD = b"1,2,3,4,5,6\n"


@pytest.mark.parametrize("body,content_type,accept,status,words", [
    (b"f0,f1,f2,f3,f4,f5\n" + GOOD, "text/csv", None, 400,
     ["CSV line 1, column 1", "'f0' is not a number", "no header"]),
    (GOOD + b"1,2,3,4,5\n", "text/csv", None, 400, ["CSV line 2 has 5 values", "takes 6 per line"]),
    (GOOD * 2 + b"1,x,3,4,5,6\n", "text/csv", None, 400, ["CSV line 3, column 2", "'x' is not a number", "float32"]),
    (GOOD + b"\n" + GOOD, "text/csv", None, 400, ["CSV line 2 is empty"]),
    (b"", "text/csv", None, 400, ["no records"]),
    (GOOD, "text/plain", None, 415, ["'text/plain' is not supported", "text/csv, application/json"]),
    (GOOD, None, None, 415, ["no Content-Type", "text/csv"]),
    (GOOD, "text/csv", "image/png", 406, ["Accept 'image/png' is not supported", "application/jsonlines"]),
    (b"[1, 2, 3, 4, 5, 6]", "application/json", None, 400, ["JSON record 1 has shape []", "records of shape [6]",
                                                             "array of records"]),
    (b'{"rows": [[1, 2, 3, 4, 5, 6]]}', "application/json", None, 400, ["is an object", '"instances"']),
    (b"[[1, 2, 3, 4, 5, 6], [1, 2]]", "application/json", None, 400, ["JSON record 2 has shape [2]"]),
    (b"[[1, 2, 3, 4, 5, 6]", "application/json", None, 400, ["not valid JSON"]),
    (b'[1, 2, 3, 4, 5, 6]\n["a", 2, 3, 4, 5, 6]\n', "application/jsonlines", None, 400,
     ["JSON Lines line 2", "not a rectangular array of numbers"]),
    (GOOD, "application/x-npy", None, 400, ["not a .npy file"]),
    (_npy(np.zeros((2, 5), np.float32)), "application/x-npy", None, 400, ["shape [2, 5]", "takes [records, 6]"]),
])
def test_bad_payloads_are_refused_naming_what_was_expected(forest, body, content_type, accept, status, words):
    with pytest.raises(InferenceError) as err:
        Predictor(forest).invoke(body, content_type, accept)
    assert err.value.status == status
    for word in words:
        assert word in str(err.value)


def test_execution_parameters_follow_the_sagemaker_variables():
    assert execution_parameters({}) == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD",
                                        "MaxPayloadInMB": 6}
    env = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "20", "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
           "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "4"}
    assert execution_parameters(env) == {"MaxConcurrentTransforms": 4, "BatchStrategy": "SINGLE_RECORD",
                                         "MaxPayloadInMB": 20}
    assert execution_parameters({"SAGEMAKER_BATCH_STRATEGY": "MultiRecord"})["BatchStrategy"] == "MULTI_RECORD"
    for name, value, expected in [("SAGEMAKER_MAX_PAYLOAD_IN_MB", "101", "0 to 100"),
                                  ("SAGEMAKER_BATCH_STRATEGY", "ALL", "SINGLE_RECORD or MULTI_RECORD"),
                                  ("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "0", "from 1")]:
        with pytest.raises(ValidationError, match=f"{name}: '{value}' is not valid; expected .*{expected}"):
            execution_parameters({name: value})


# -- neocompile serve-model ---------------------------------------------------------------------------------------
class ModelServerProcess:
    """``neocompile serve-model serve`` (as SageMaker's ``docker run IMAGE serve``) on a free port."""

    def __init__(self, model_dir: Path, env: dict[str, str] | None = None):
        cmd = [sys.executable, "-m", "neocompile", "serve-model", "serve", "--model-dir", str(model_dir),
               "--port", "0", "--host", "127.0.0.1"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline()  # "neocompile serve-model: listening on http://127.0.0.1:PORT"
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"serve-model did not start: {line!r} {self.proc.stderr.read()}")
        self.port = int(line.rsplit(":", 1)[1])
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)  # one kept-alive connection

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, dict, bytes]:
        self.conn.request(method, path, body, {k.replace("_", "-"): v for k, v in headers.items()})
        response = self.conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    def stop(self) -> int:
        self.conn.close()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code


@pytest.fixture(scope="module")
def server(forest, tmp_path_factory):
    """serve-model on the XGBoost package's files unpacked as SageMaker unpacks ModelDataUrl, with the variables a
    transform job sets."""
    model_dir = tmp_path_factory.mktemp("opt-ml-model")
    with tarfile.open(forest) as tar:
        tar.extractall(model_dir, filter="data")
    process = ModelServerProcess(model_dir, {"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1",
                                             "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
                                             "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "2"})
    yield process
    assert process.stop() == 0


def test_serve_model_answers_ping_and_execution_parameters(server):
    assert server.request("GET", "/ping")[::2] == (200, b"")
    status, headers, body = server.request("GET", "/execution-parameters")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"MaxConcurrentTransforms": 2, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 1}


def test_serve_model_invocations_give_the_models_predictions(server, forest):
    rows = _rows(50, seed=9)
    status, headers, body = server.request("POST", "/invocations", _csv(rows), Content_Type="text/csv",
                                           Accept="text/csv")
    assert status == 200 and headers["Content-Type"] == "text/csv"
    np.testing.assert_array_equal(np.array(body.decode().split(), dtype=np.float32), Model(forest).run(rows)[0])
    status, headers, body = server.request("POST", "/invocations", _csv(rows[:2]), Content_Type="text/csv",
                                           Accept="application/json")
    assert status == 200 and headers["Content-Type"] == "application/json" and len(json.loads(body)) == 2


def test_serve_model_refuses_bad_requests_with_a_clear_message(server):
    header = b"a,b,c,d,e,f\n1,2,3,4,5,6\n"
    status, headers, body = server.request("POST", "/invocations", header, Content_Type="text/csv")
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert "CSV line 1, column 1: 'a' is not a number" in json.loads(body)["error"]
    status, _, body = server.request("POST", "/invocations", GOOD, Content_Type="text/csv", Accept="image/png")
    assert status == 406 and "image/png" in json.loads(body)["error"]
    big = GOOD * (1024 * 1024 // len(GOOD) + 1)  # just over SAGEMAKER_MAX_PAYLOAD_IN_MB=1
    status, _, body = server.request("POST", "/invocations", big, Content_Type="text/csv")
    assert status == 413 and "MaxPayloadInMB (1 MB)" in json.loads(body)["error"]
    status, _, body = server.request("GET", "/models")
    assert status == 404 and "/invocations" in json.loads(body)["error"]
    assert server.request("GET", "/ping")[0] == 200  # the same connection, still good after each refusal


def test_serve_model_takes_a_package_archive_in_the_model_dir(cnn, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / cnn.name).write_bytes(cnn.read_bytes())
    process = ModelServerProcess(tmp_path / "model")
    try:
        status, _, body = process.request("GET", "/execution-parameters")
        assert json.loads(body) == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}
        images = _images(2)
        status, headers, body = process.request("POST", "/invocations", _npy(images), Content_Type="application/x-npy")
        assert status == 200 and headers["Content-Type"] == "application/x-npy"
        model = Model(cnn)
        want = np.concatenate([model.run(images[i:i + 1])[0] for i in range(2)])
        np.testing.assert_allclose(np.load(io.BytesIO(body)), want, rtol=1e-6)
    finally:
        assert process.stop() == 0


def test_serve_model_without_a_package_fails_naming_what_it_found(tmp_path):
    (tmp_path / "readme.txt").write_text("no model here")
    cmd = [sys.executable, "-m", "neocompile", "serve-model", "--model-dir", str(tmp_path), "--port", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "holds no package archives and no compiled.meta (readme.txt)" in done.stderr
