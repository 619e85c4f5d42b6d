"""Batch transform's data plane (neocompile.service.batch): splitting, batching, DataProcessing, in bounded memory.

The "models" are plain functions of (payload, content_type, accept) -> bytes, as the worker's /invocations call is.
"""
from __future__ import annotations

import gzip
import io
import itertools
import json
import random
import struct
import threading
import time
import tracemalloc

import pytest

from neocompile.service.batch import (
    RecordError,
    Stopped,
    TransformSpec,
    check,
    transform_stream,
)
from neocompile.service.batch.jsonpath import JsonPathError, PathError, parse
from neocompile.service.batch.splitting import crc32c, crc32c_python, masked_crc32c

MB = 1 << 20
CSV_DP = {"content_type": "text/csv", "accept": "text/csv", "split_type": "Line", "assemble_with": "Line"}


class Model:
    """A fake model that records its calls; ``answer(payload) -> bytes``."""

    def __init__(self, answer, delay=None):
        self.answer, self.delay, self.calls = answer, delay, []
        self.lock = threading.Lock()

    def __call__(self, payload: bytes, content_type, accept) -> bytes:
        with self.lock:
            self.calls.append((payload, content_type, accept))
        if self.delay:
            time.sleep(self.delay())
        return self.answer(payload)


def csv_sums(payload: bytes) -> bytes:
    """One line per CSV line of the payload: the sum of its fields."""
    return b"".join(b"%d\n" % sum(int(x) for x in line.split(b",")) for line in payload.split(b"\n"))


def jsonl_sums(payload: bytes) -> bytes:
    return b"".join(b"%d\n" % sum(json.loads(line)) for line in payload.split(b"\n"))


def echo(payload: bytes) -> bytes:
    return payload


def run(spec: TransformSpec, data: bytes, model, **kw) -> bytes:
    sink = io.BytesIO()
    transform_stream(spec, io.BytesIO(data), sink, model, **kw)
    return sink.getvalue()


# ---- the canonical DataProcessing cases of AWS's page ----

def test_csv_with_an_id_column_sends_the_features_and_writes_id_and_prediction():
    spec = TransformSpec(**CSV_DP, input_filter="$[1:]", join_source="Input", output_filter="$[0,-1]")
    model = Model(csv_sums)
    sink = io.BytesIO()
    n = transform_stream(spec, io.BytesIO(b"a,1,2\nb,3,4\r\nc,5,6"), sink, model)
    assert n == 3
    assert sink.getvalue() == b"a,3\nb,7\nc,11\n"
    assert model.calls == [(b"1,2\n3,4\n5,6", "text/csv", "text/csv")]  # one MultiRecord mini-batch, valid CSV


def test_csv_join_keeps_every_input_column_as_written():
    spec = TransformSpec(**CSV_DP, input_filter="$[1:]", join_source="Input")
    out = run(spec, b'007,1.50,"x,y"\n', Model(lambda p: b"0.25\n"))
    assert out == b'007,1.50,"x,y",0.25\n'  # leading zeros, trailing zeros and quoting of the input survive


def test_csv_inference_of_several_columns_is_appended_column_by_column():
    spec = TransformSpec(**CSV_DP, join_source="Input")
    assert run(spec, b"1,2\n3,4\n", Model(lambda p: b"0.1,0.9\n0.8,0.2\n")) == b"1,2,0.1,0.9\n3,4,0.8,0.2\n"


def test_json_lines_features_in_and_id_with_output_out():
    spec = TransformSpec(content_type="application/jsonlines", accept="application/jsonlines", split_type="Line",
                         assemble_with="Line", input_filter="$.features", join_source="Input",
                         output_filter="$['id','SageMakerOutput']")
    model = Model(jsonl_sums)
    data = b'{"id":"r1","features":[1,2],"other":true}\n{"id":"r2","features":[3,4]}\n'
    assert run(spec, data, model) == b'{"id":"r1","SageMakerOutput":3}\n{"id":"r2","SageMakerOutput":7}\n'
    assert model.calls[0][0] == b"[1,2]\n[3,4]"


def test_json_object_gets_sagemaker_output_and_other_values_are_wrapped():
    spec = TransformSpec(content_type="application/jsonlines", accept="application/jsonlines", split_type="Line",
                         assemble_with="Line", join_source="Input", batch_strategy="SingleRecord")
    answers = {b'{"key":1}': b'{"label":1}', b"[1,2]": b"3", b'"text"': b'{"label":0}'}
    out = run(spec, b'{"key":1}\n[1,2]\n"text"\n', Model(lambda p: answers[p]))
    assert out.splitlines() == [b'{"key":1,"SageMakerOutput":{"label":1}}',
                                b'{"SageMakerInput":[1,2],"SageMakerOutput":3}',
                                b'{"SageMakerInput":"text","SageMakerOutput":{"label":0}}']


def test_input_member_named_sagemaker_output_is_replaced():
    spec = TransformSpec(content_type="application/json", split_type="Line", join_source="Input",
                         batch_strategy="SingleRecord")
    assert run(spec, b'{"SageMakerOutput":"old","a":1}', Model(lambda p: b"2")) == b'{"SageMakerOutput":2,"a":1}'


def test_csv_inference_joined_into_json_becomes_numbers():
    spec = TransformSpec(content_type="application/jsonlines", accept="text/csv", split_type="Line",
                         assemble_with="Line", join_source="Input", input_filter="$.x")
    out = run(spec, b'{"x":[1]}\n{"x":[2]}\n', Model(lambda p: b"0.5\nabc\n"))
    assert out == b'{"x":[1],"SageMakerOutput":0.5}\n{"x":[2],"SageMakerOutput":"abc"}\n'


def test_application_json_multirecord_response_may_be_an_array_or_one_value_per_line():
    spec = TransformSpec(content_type="application/json", accept="application/json", split_type="Line",
                         assemble_with="Line", join_source="Input", output_filter="$.SageMakerOutput")
    data = b"[1]\n[2]\n"
    assert run(spec, data, Model(lambda p: b'[{"p":1},{"p":2}]')) == b'{"p":1}\n{"p":2}\n'
    assert run(spec, data, Model(lambda p: b'[0.1,0.9]\n[0.8,0.2]\n')) == b"[0.1,0.9]\n[0.8,0.2]\n"


def test_output_filter_without_join_filters_each_inference():
    spec = TransformSpec(content_type="application/jsonlines", split_type="Line", assemble_with="None",
                         output_filter="$.label")
    out = run(spec, b"1\n2\n", Model(lambda p: b'{"label":"a","p":0.1}\n{"label":"b","p":0.2}'))
    assert out == b'"a""b"'  # AssembleWith None: records concatenated


def test_json_lines_not_split_still_joins_record_by_record():
    spec = TransformSpec(content_type="application/jsonlines", split_type="None", assemble_with="Line",
                         input_filter="$.v", join_source="Input")
    model = Model(jsonl_sums)
    assert run(spec, b'{"v":[1,1]}\n\n{"v":[2,2]}\n', model) == b'{"v":[1,1],"SageMakerOutput":2}\n' \
                                                              b'{"v":[2,2],"SageMakerOutput":4}\n'
    assert [c[0] for c in model.calls] == [b"[1,1]\n[2,2]"]  # one request for the whole object


# ---- splitting, batching, assembling ----

def test_split_none_sends_the_whole_object_as_is():
    data = b"a,b\r\n1,2\n"
    model = Model(lambda p: b"result")
    assert run(TransformSpec(content_type="text/csv"), data, model) == b"result"
    assert model.calls == [(data, "text/csv", None)]
    assert run(TransformSpec(assemble_with="Line"), data, model) == b"result\n"
    assert run(TransformSpec(assemble_with="Line"), data, Model(lambda p: b"r\n")) == b"r\n"


def test_gzip_object_not_split_is_decompressed_whole():
    data = b"\x00binary\xff" * 1000
    model = Model(lambda p: b"%d" % len(p))
    assert run(TransformSpec(compression="Gzip"), gzip.compress(data), model) == b"%d" % len(data)
    assert model.calls[0][0] == data


def test_single_record_sends_each_line_without_its_line_end():
    spec = TransformSpec(split_type="Line", batch_strategy="SingleRecord", assemble_with="Line")
    model = Model(lambda p: p.upper())
    assert run(spec, b"a\r\nb\n\nc", model) == b"A\nB\nC\n"
    assert [c[0] for c in model.calls] == [b"a", b"b", b"c"]  # the empty line is not a record


def test_multirecord_without_data_processing_writes_each_response_through():
    spec = TransformSpec(split_type="Line", assemble_with="Line", max_payload_mb=1)
    out = run(spec, b"1,2\n3,4\n", Model(lambda p: b"3,7"))
    assert out == b"3,7\n"  # the container's own batch format; one newline per response


def test_gzip_csv_multirecord_batches_stay_under_the_limit_and_in_order_with_concurrency_4():
    features = [[i * k for k in range(100_000, 100_010)] for i in range(40_000)]
    rows = [f"id{i}," + ",".join(map(str, f)) for i, f in enumerate(features)]
    data = gzip.compress("\n".join(rows).encode() + b"\n", compresslevel=1)  # 3.6 MB of features
    spec = TransformSpec(**CSV_DP, compression="Gzip", max_payload_mb=1, input_filter="$[1:]",
                         join_source="Input", output_filter="$[0,-1]")
    rng = random.Random(1)
    model = Model(csv_sums, delay=lambda: rng.random() * 0.05)  # responses come back out of order
    sink = io.BytesIO()
    assert transform_stream(spec, io.BytesIO(data), sink, model, concurrency=4) == len(rows)
    payloads = [c[0] for c in model.calls]
    assert len(payloads) >= 4 and all(len(p) <= MB for p in payloads)
    assert all(len(p) > MB - 200 for p in payloads[:-1])  # greedy: a mini-batch is full when the next row won't fit
    sent = b"\n".join(sorted(payloads, key=lambda p: int(p.split(b",", 1)[0])))
    assert sent.split(b"\n") == [r.split(",", 1)[1].encode() for r in rows]  # every record once, none cut
    assert sink.getvalue().decode().splitlines() == [f"id{i},{sum(f)}" for i, f in enumerate(features)]


def test_concurrent_pass_through_keeps_input_order():
    spec = TransformSpec(split_type="Line", batch_strategy="SingleRecord", assemble_with="Line")
    rng = random.Random(2)
    data = b"\n".join(b"%d" % i for i in range(200))
    out = run(spec, data, Model(echo, delay=lambda: rng.random() * 0.005), concurrency=4)
    assert out == data + b"\n"


def recordio_frame(data: bytes) -> bytes:
    """MXNet's RecordIOWriter::WriteRecord: a record holding the magic at a 4-byte boundary is written in parts."""
    magic = struct.pack("<I", 0xCED7230A)
    out, start = [], 0
    for i in range(0, len(data) // 4 * 4, 4):
        if data[i:i + 4] == magic:
            out += [magic, struct.pack("<I", ((1 if start == 0 else 2) << 29) | (i - start)), data[start:i]]
            start = i + 4
    out += [magic, struct.pack("<I", ((3 if start else 0) << 29) | (len(data) - start)), data[start:]]
    return b"".join(out) + b"\0" * (-len(data) % 4)


RECORDS = [b"", b"a", b"abc", b"abcd", b"abcde", b"\x00\x01\x02\x03" * 300,
           b"head" + struct.pack("<I", 0xCED7230A) + b"tail!", struct.pack("<I", 0xCED7230A) * 2]


def test_recordio_single_record_sends_payloads_without_header_or_padding():
    stream = b"".join(recordio_frame(r) for r in RECORDS)
    model = Model(lambda p: b"%d" % len(p))
    spec = TransformSpec(split_type="RecordIO", batch_strategy="SingleRecord", assemble_with="Line")
    assert run(spec, stream, model) == b"".join(b"%d\n" % len(r) for r in RECORDS)
    assert [c[0] for c in model.calls] == RECORDS


def test_recordio_multirecord_sends_the_frames_with_their_padding():
    stream = b"".join(recordio_frame(r) for r in RECORDS)
    model = Model(echo)
    assert run(TransformSpec(split_type="RecordIO"), stream, model) == stream
    assert len(model.calls) == 1


def test_recordio_bad_magic_names_the_record():
    stream = recordio_frame(b"ok") + b"\x00" * 8
    with pytest.raises(RecordError, match="magic") as e:
        run(TransformSpec(split_type="RecordIO"), stream, Model(echo))
    assert e.value.record == 2


# Written by tf.io.TFRecordWriter (TensorFlow 2.21): b"hello", b"", b"tfrecord\x00\xff".
TF_FILE = bytes.fromhex("0500000000000000eab2043e68656c6c6fbb1f1c19000000000000000029039807d8ea82a20a00000000000000"
                        "aea3bf3a74667265636f726400ff1a4489a9")


def tfrecord_frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def test_crc32c_matches_the_standard_check_value():
    assert crc32c(b"123456789") == crc32c_python(b"123456789") == 0xE3069283
    data = bytes(range(256)) * 3
    assert crc32c(data) == crc32c_python(data)


def test_tfrecord_files_written_by_tensorflow_split_into_their_records():
    assert b"".join(tfrecord_frame(r) for r in (b"hello", b"", b"tfrecord\x00\xff")) == TF_FILE
    model = Model(lambda p: p[::-1])
    spec = TransformSpec(split_type="TFRecord", batch_strategy="SingleRecord")
    assert run(spec, TF_FILE, model) == b"olleh" + b"\xff\x00drocerft"
    assert [c[0] for c in model.calls] == [b"hello", b"", b"tfrecord\x00\xff"]
    assert run(TransformSpec(split_type="TFRecord"), TF_FILE, Model(echo)) == TF_FILE  # MultiRecord: framed


def test_tfrecord_corruption_is_a_record_error():
    bad = bytearray(TF_FILE)
    bad[-5] ^= 1  # a byte of the third record's data
    with pytest.raises(RecordError, match="CRC") as e:
        run(TransformSpec(split_type="TFRecord"), bytes(bad), Model(echo))
    assert e.value.record == 3
    with pytest.raises(RecordError, match="truncated"):
        run(TransformSpec(split_type="TFRecord"), TF_FILE[:-2], Model(echo))


def test_tfrecord_multirecord_batches_whole_frames_under_the_limit():
    records = [bytes([i]) * 400_000 for i in range(5)]
    stream = b"".join(tfrecord_frame(r) for r in records)
    model = Model(echo)
    assert run(TransformSpec(split_type="TFRecord", max_payload_mb=1), stream, model) == stream
    assert [len(c[0]) for c in model.calls] == [2 * 400_016, 2 * 400_016, 400_016]


# ---- errors ----

def test_output_filter_index_beyond_the_joined_record_names_the_record():
    spec = TransformSpec(**CSV_DP, join_source="Input", output_filter="$[0,3]")
    with pytest.raises(RecordError) as e:
        run(spec, b"1,2,3\n4,5\n6,7,8\n", Model(csv_sums))
    assert e.value.record == 2
    assert "record 2" in str(e.value) and "index 3" in str(e.value) and "OutputFilter $[0,3]" in str(e.value)


@pytest.mark.parametrize("bad", [b"\xff\xfe\x00\x01", b"a,\"b", b"a\x00b", b'a,"b"c'])
def test_non_csv_data_under_text_csv_is_a_record_error(bad):
    spec = TransformSpec(**CSV_DP, input_filter="$[1:]")
    with pytest.raises(RecordError, match="ContentType text/csv") as e:
        run(spec, b"1,2\n\n" + bad + b"\n5,6\n", Model(csv_sums))
    assert e.value.record == 3  # its line number


def test_input_filter_selecting_no_csv_column_is_a_record_error():
    spec = TransformSpec(**CSV_DP, input_filter="$[2:]")
    with pytest.raises(RecordError, match="selects no column") as e:
        run(spec, b"1,2,3\n4,5\n", Model(csv_sums))
    assert e.value.record == 2


def test_input_filter_that_does_not_fit_a_json_record_names_it():
    spec = TransformSpec(content_type="application/jsonlines", split_type="Line", input_filter="$.features")
    with pytest.raises(RecordError, match=r"record 2: DataProcessing.InputFilter \$.features: \$ has no member"):
        run(spec, b'{"features":[]}\n{"id":1}\n', Model(echo))


def test_invalid_json_record_is_a_record_error():
    spec = TransformSpec(content_type="application/jsonlines", split_type="Line", input_filter="$.a")
    with pytest.raises(RecordError, match="not valid JSON") as e:
        run(spec, b'{"a":1}\n{"a":\n', Model(echo))
    assert e.value.record == 2


def test_record_larger_than_max_payload_is_a_record_error():
    data = b"small\n" + b"x" * (MB + 10) + b"\nsmall\n"
    for strategy in ("SingleRecord", "MultiRecord"):
        with pytest.raises(RecordError, match="larger than MaxPayloadInMB 1") as e:
            run(TransformSpec(split_type="Line", batch_strategy=strategy, max_payload_mb=1), data, Model(echo))
        assert e.value.record == 2
    with pytest.raises(RecordError, match="SplitType None") as e:
        run(TransformSpec(max_payload_mb=1), b"x" * (MB + 1), Model(echo))
    assert e.value.record == 1
    assert run(TransformSpec(max_payload_mb=0), b"x" * (MB + 1), Model(lambda p: b"%d" % len(p))) == b"%d" % (MB + 1)


def test_multirecord_response_count_mismatch_names_both_numbers():
    spec = TransformSpec(**CSV_DP, join_source="Input")
    with pytest.raises(RecordError, match=r"returned 2 results for 3 records \(the mini-batch of records 1-3\)"):
        run(spec, b"1\n2\n3\n", Model(lambda p: b"1\n2\n"))


def test_unreadable_response_is_a_record_error():
    spec = TransformSpec(content_type="application/jsonlines", split_type="Line", join_source="Input",
                         batch_strategy="SingleRecord")
    with pytest.raises(RecordError, match="response to record 1 .* not valid JSON"):
        run(spec, b"1\n", Model(lambda p: b"{oops"))


def test_bad_gzip_is_a_record_error():
    with pytest.raises(RecordError, match="gzip"):
        run(TransformSpec(split_type="Line", compression="Gzip"), b"not gzip at all", Model(echo))


@pytest.mark.parametrize("concurrency", [1, 4])
def test_stop_between_batches_raises_stopped(concurrency):
    model = Model(echo)
    asked = itertools.count()
    spec = TransformSpec(split_type="Line", batch_strategy="SingleRecord")
    with pytest.raises(Stopped) as e:
        run(spec, b"1\n2\n3\n4\n5\n6\n7\n8\n", model, should_stop=lambda: next(asked) >= 2,
            concurrency=concurrency)
    if concurrency == 1:
        assert e.value.records == 2 and len(model.calls) == 2
    else:  # two calls were submitted; one not started yet is dropped, one running is not awaited
        time.sleep(0.1)
        assert e.value.records == 0 and 1 <= len(model.calls) <= 2


def test_a_spec_that_fails_check_is_refused_before_reading():
    with pytest.raises(ValueError, match="BatchStrategy"):
        run(TransformSpec(batch_strategy="SingleRecord"), b"x", Model(echo))


# ---- check() ----

@pytest.mark.parametrize("spec, expected", [
    (TransformSpec(batch_strategy="MultiRecord"), "BatchStrategy MultiRecord needs TransformInput.SplitType"),
    (TransformSpec(content_type="image/png", join_source="Input"), "ContentType 'image/png': DataProcessing works"),
    (TransformSpec(content_type="application/json", accept="application/x-npy", output_filter="$[0]"),
     "Accept 'application/x-npy'"),
    (TransformSpec(input_filter="$.a", split_type="Line"), "DataProcessing needs TransformInput.ContentType"),
    (TransformSpec(content_type="text/csv", split_type="None", input_filter="$[1:]", assemble_with="Line"),
     "needs SplitType Line"),
    (TransformSpec(content_type="text/csv", split_type="Line", input_filter="$[1:]"), "needs AssembleWith Line"),
    (TransformSpec(content_type="application/json", split_type="RecordIO", join_source="Input"),
     "SplitType RecordIO: DataProcessing"),
    (TransformSpec(**CSV_DP, input_filter="$.features"), "InputFilter '$.features': CSV rows are arrays"),
    (TransformSpec(**CSV_DP, join_source="Input", output_filter="$['id']"), "OutputFilter \"$['id']\": joined CSV"),
    (TransformSpec(max_payload_mb=101), "MaxPayloadInMB 101 is more than the maximum of 100"),
    (TransformSpec(max_payload_mb=-1), "MaxPayloadInMB -1"),
    (TransformSpec(split_type="Line", max_payload_mb=0), "MaxPayloadInMB 0"),
    (TransformSpec(max_payload_mb=20, max_concurrent_transforms=8), "8 × 20 = 160 MB"),
    (TransformSpec(split_type="Lines"), "TransformInput.SplitType 'Lines' is not one of"),
    (TransformSpec(compression="Zip"), "CompressionType 'Zip'"),
    (TransformSpec(assemble_with="Newline"), "AssembleWith 'Newline'"),
    (TransformSpec(join_source="Output"), "JoinSource 'Output'"),
    (TransformSpec(output_filter="$[0:2,246:]"), ("DataProcessing.OutputFilter: Invalid JsonPath: $[0:2,246:]: only "
     "single range filters of format (eg: [1:5]) are supported. Format [0:2,246:] is not supported")),
])
def test_check_names_the_member_and_value(spec, expected):
    problems = check(spec)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("spec", [
    TransformSpec(),
    TransformSpec(**CSV_DP, input_filter="$[1:]", join_source="Input", output_filter="$[0,-1]"),
    TransformSpec(content_type="application/jsonlines", accept="application/jsonlines", split_type="Line",
                  input_filter="$.features", join_source="Input", output_filter="$['id','SageMakerOutput']"),
    TransformSpec(content_type="application/json", join_source="Input", output_filter="$[0,5:]"),
    TransformSpec(content_type="text/csv; charset=utf-8", accept="text/csv", split_type="Line", assemble_with="Line",
                  output_filter="$[0]"),
    TransformSpec(content_type="image/jpeg", split_type="RecordIO", batch_strategy="MultiRecord", max_payload_mb=100),
    TransformSpec(max_payload_mb=0),
    TransformSpec(split_type="Line", batch_strategy="SingleRecord", max_payload_mb=0),
    TransformSpec(max_payload_mb=10, max_concurrent_transforms=10),
])
def test_check_accepts_documented_settings(spec):
    assert check(spec) == []


def test_spec_from_a_create_transform_job_body():
    body = {"TransformJobName": "j", "ModelName": "m", "MaxPayloadInMB": 2, "BatchStrategy": "SingleRecord",
            "MaxConcurrentTransforms": 4,
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}},
                               "ContentType": "text/csv", "CompressionType": "Gzip", "SplitType": "Line"},
            "TransformOutput": {"S3OutputPath": "s3://b/out", "Accept": "text/csv", "AssembleWith": "Line"},
            "DataProcessing": {"InputFilter": "$[1:]", "JoinSource": "Input"}}
    assert TransformSpec.from_request(body) == TransformSpec(
        content_type="text/csv", accept="text/csv", split_type="Line", compression="Gzip",
        batch_strategy="SingleRecord", max_payload_mb=2, assemble_with="Line", input_filter="$[1:]",
        output_filter="$", join_source="Input", max_concurrent_transforms=4)
    minimal = TransformSpec.from_request({"TransformInput": {}, "TransformOutput": {"S3OutputPath": "s3://b/o"}})
    assert minimal == TransformSpec() and minimal.strategy is None and minimal.max_payload_bytes == 6 * MB
    assert TransformSpec(split_type="Line").strategy == "MultiRecord"


# ---- the JSONPath subset ----

ROW = [0, 1, 2, 3, 4, 5]
DOC = {"id": 7, "features": [1, 2], "SageMakerOutput": {"p": 0.5}, "nested": {"a": 1, "b": 2},
       "field1": {"child1": "x", "child2": "y", "child3": "z"}, "odd key": 3}


@pytest.mark.parametrize("path, value, expected", [
    ("$", DOC, DOC),
    ("$.id", DOC, 7),
    ("$.nested.*", DOC, [1, 2]),
    ("$.features[*]", DOC, [1, 2]),
    ("$.features[-1]", DOC, 2),
    ("$['id','SageMakerOutput']", DOC, {"id": 7, "SageMakerOutput": {"p": 0.5}}),
    ("$[ 'id' , \"features\" ]", DOC, {"id": 7, "features": [1, 2]}),
    ("$.field1.['child1','child2']", DOC, {"child1": "x", "child2": "y"}),
    ("$['odd key']", DOC, 3),
    ("$.SageMakerOutput.p", DOC, 0.5),
    ("$[1]", ROW, 1),
    ("$[-1]", ROW, 5),
    ("$[-6]", ROW, 0),
    ("$[1,3,5]", ROW, [1, 3, 5]),
    ("$[0,-1]", ROW, [0, 5]),
    ("$[2:5]", ROW, [2, 3, 4]),   # end-exclusive
    ("$[1:4]", ROW, [1, 2, 3]),
    ("$[:5]", ROW, [0, 1, 2, 3, 4]),
    ("$[2:]", ROW, [2, 3, 4, 5]),
    ("$[-2:]", ROW, [4, 5]),
    ("$[1:]", ROW, [1, 2, 3, 4, 5]),
    ("$[0,5:]", ROW, [0, 5]),
    ("$[0,3:]", ROW, [0, 3, 4, 5]),
    ("$[4:100]", ROW, [4, 5]),    # slices clamp
    ("$[*]", ROW, ROW),
])
def test_jsonpath_subset_selects(path, value, expected):
    assert parse(path).apply(value) == expected


@pytest.mark.parametrize("path, why", [
    ("$[0:2,246:]", ("only single range filters of format (eg: [1:5]) are supported. Format [0:2,246:] is not "
                     "supported")),
    ("$.field1.['child1','child2.grandchild']", "cannot nest further"),
    ("$['a','b'].c", "nothing may follow"),
    ("$[1:].x", "nothing may follow"),
    ("$[0,1][0]", "nothing may follow"),
    ("$.*.a", "nothing may follow"),
    ("id", "must start with $"),
    ("", "must start with $"),
    ("[0]", "must start with $"),
    ("$..id", "recursive descent"),
    ("$[?(@.a > 1)]", "filter"),
    ("$[1:5:2]", "steps"),
    ("$[", "missing ']'"),
    ("$[1", "missing ']'"),
    ("$['a'", "missing ']'"),
    ("$['a", "unterminated"),
    ("$.a b", "unexpected ' '"),
    ("$x", "unexpected 'x'"),
    ("$.", "expected a member name"),
    ("$[]", "unexpected ']'"),
    ("$[1,]", "unexpected ']'"),
    ("$[a]", "unexpected 'a'"),
    ("$['a',1]", "names and indexes cannot mix"),
    ("$[1,'a']", "unexpected"),
])
def test_jsonpath_outside_the_subset_is_refused(path, why):
    with pytest.raises(JsonPathError) as e:
        parse(path)
    assert str(e.value).startswith(f"Invalid JsonPath: {path}: ") and why in str(e.value)


@pytest.mark.parametrize("path, value, why", [
    ("$[6]", ROW, "index 6 is outside $ (an array of 6)"),
    ("$[-7]", ROW, "index -7 is outside $"),
    ("$[0,9:]", ROW, None),  # a slice past the end is empty, not an error
    ("$.id", ROW, "not an object"),
    ("$[0]", DOC, "not an array"),
    ("$.missing", DOC, "$ has no member 'missing'"),
    ("$['id','missing']", DOC, "no member 'missing'"),
    ("$.id.*", DOC, "$.id is a single value"),
    ("$.features[5]", DOC, "outside $.features"),
])
def test_jsonpath_that_does_not_fit_the_record_says_where(path, value, why):
    if why is None:
        assert parse(path).apply(value) == [0]
        return
    with pytest.raises(PathError) as e:
        parse(path).apply(value)
    assert why in str(e.value)


# ---- bounded memory ----

class GeneratedCsv(io.RawIOBase):
    """A CSV object of ``size`` bytes made as it is read (one block of 1000 rows, over and over): no copy of it ever
    exists in memory."""

    BLOCK = b"".join(b"id%08d,%d," % (r, r % 7) + b"0.12345678901234567890123456789012345678901234567890," * 16
                     + b"%d\n" % (r % 13) for r in range(1000))  # 850-byte rows

    def __init__(self, size: int):
        self.left, self.pos = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), len(self.BLOCK) - self.pos, self.left)
        b[:n] = self.BLOCK[self.pos:self.pos + n]
        self.pos, self.left = (self.pos + n) % len(self.BLOCK), self.left - n
        return n


class CountingSink(io.RawIOBase):
    def __init__(self):
        self.size, self.lines = 0, 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.size += len(b)
        self.lines += bytes(b).count(b"\n")
        return len(b)


def ones(payload: bytes, content_type, accept) -> bytes:
    """A model that answers 1 for each CSV line, and keeps nothing."""
    return b"1\n" * (payload.count(b"\n") + 1)


@pytest.mark.parametrize("size, data_processing", [(50 * MB, False), (20 * MB, True)])
def test_a_large_object_streams_in_memory_bounded_by_the_payload_size(size, data_processing):
    dp = {"input_filter": "$[1:]", "join_source": "Input", "output_filter": "$[0,-1]"} if data_processing else {}
    spec = TransformSpec(**CSV_DP, max_payload_mb=1, **dp)
    sink = CountingSink()
    tracemalloc.start()
    try:
        n = transform_stream(spec, io.BufferedReader(GeneratedCsv(size)), sink, ones)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == sink.lines > size // 1000
    assert peak < 8 * MB, f"peak {peak / MB:.1f} MB for a {size / MB:.0f} MB object"
