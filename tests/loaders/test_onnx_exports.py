"""ONNX as exporters really write it, through the whole pipeline: each model compiled for an x86 target and an ARM
target (verified under qemu) and verified against onnxruntime, with the tolerance its precision calls for."""
from __future__ import annotations

import json
import tarfile

import onnx
import pytest

import neocompile
from neocompile import modelzoo
from neocompile.loaders.onnx import ROUTE
from neocompile.targets import get_target
from tests import onnx_models
from tests.need import need
from tests.onnx_models import BERT_CONFIG, CNN_CONFIG

need("transformers")
need("onnxscript")

# ml_c5's code needs AVX-512; where this CPU lacks it, ml_c4 (the same x86_64 path, AVX2) is compiled and verified
# natively instead, so that every job here is verified rather than skipped.
X86 = "ml_c5" if get_target("ml_c5").host_is_native() else "ml_c4"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (model.tar.gz, DataInputConfig); built once (the dynamo export alone takes ~6 s)."""
    tmp = tmp_path_factory.mktemp("exports")
    files = {
        "bert-torchscript": (onnx_models.bert_onnx(tmp / "bert-ts.onnx", dynamo=False), BERT_CONFIG),
        "bert-dynamo": (onnx_models.bert_onnx(tmp / "bert-dynamo.onnx", dynamo=True), BERT_CONFIG),
        "quantize-dynamic": (onnx_models.quantized(onnx_models.conv_net(), tmp, "dynamic"), CNN_CONFIG),
        "quantize-static-qdq": (onnx_models.quantized(onnx_models.conv_net(), tmp, "qdq"), CNN_CONFIG),
        "quantize-static-qoperator": (onnx_models.quantized(onnx_models.residual_net(), tmp, "qoperator"), CNN_CONFIG),
    }
    fp16 = tmp / "fp16.onnx"
    onnx.save(onnx_models.to_float16(modelzoo.small_cnn(size=16, batch=1)), fp16)
    files["float16"] = (fp16, '{"data": [1, 3, 16, 16]}')
    return {name: (modelzoo.write_archive(tmp / f"{name}.tar.gz", {"model.onnx": path.read_bytes()}), config)
            for name, (path, config) in files.items()}


def _ops(models, name):
    with tarfile.open(models[name][0]) as tar:
        model = onnx.load_from_string(tar.extractfile("model.onnx").read())
    return {n.op_type for n in model.graph.node}


def _compile(models, tmp_path, name, target):
    archive, config = models[name]
    result = neocompile.compile_model(str(archive), "ONNX", str(tmp_path / "out"), config, target_device=target)
    with tarfile.open(result.artifact_uri) as tar:
        meta = json.load(tar.extractfile("compiled.meta"))
    return result.verification, meta


# (model, ARM target, the precision it verifies with). The ARM targets alternate between armv7 and aarch64.
CASES = [
    ("bert-torchscript", "rasp3b", "float32"),
    ("bert-dynamo", "rk3399", "float32"),
    ("quantize-dynamic", "rasp3b", "int8"),
    ("quantize-static-qdq", "rk3399", "int8"),
    ("quantize-static-qoperator", "rasp3b", "int8"),
    ("float16", "rk3399", "float16"),
]


def test_the_models_hold_the_constructs_exporters_write(models):
    assert "ConstantOfShape" in _ops(models, "bert-torchscript")  # the rank-0 fill TVM's converter fails on
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= _ops(models, "quantize-dynamic")
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(models, "quantize-static-qdq")
    assert {"QLinearConv", "QGemm", "QLinearAdd", "QLinearSoftmax"} <= _ops(models, "quantize-static-qoperator")
    assert "BatchNormalization" in _ops(models, "float16")


@pytest.mark.parametrize("name,arm,precision", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("where", ["x86", "arm"])
def test_compiles_and_verifies_against_onnxruntime(models, tmp_path, name, arm, precision, where):
    target = X86 if where == "x86" else arm
    report, meta = _compile(models, tmp_path, name, target)
    assert report["status"] == "passed", report
    assert report["mode"].startswith("native" if where == "x86" else "emulated: qemu-")
    assert meta["Compilation"]["ImportRoute"] == ROUTE and meta["Verification"]["status"] == "passed"
    assert report["tolerance"].startswith("default for " + precision)
    assert all(row["within_tolerance"] for row in report["outputs"])
