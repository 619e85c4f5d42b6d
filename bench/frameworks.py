"""The benchmark's framework rows: models as users save them from libraries, each compiled by neocompile from the
file its framework writes and timed at 1 thread against that framework and onnxruntime in the same child process.

- ``bert_minilm``: a ``transformers`` BertModel sized like the MiniLM-L6 sentence encoders (6 layers, hidden 384, 12
  heads, FFN 1536; seeded random weights, nothing downloaded) on int64 ``input_ids`` + ``attention_mask`` at seq 128,
  compiled twice: from the traced TorchScript file (PYTORCH) and from its ``torch.onnx.export`` (ONNX, opset 17);
  baselines torch (the traced module) and onnxruntime (the ONNX file).
- ``keras_mobilenet_v2``: ``keras.applications.MobileNetV2(weights=None)``, logits out, exported as a SavedModel (TENSORFLOW,
  NHWC 1x224x224x3); baselines TensorFlow (the SavedModel's serving signature) and onnxruntime (tf2onnx's export).
- ``xgboost``: 100 trees of depth 6 trained on 10,000 rows x 20 features (XGBOOST, the JSON model file); baseline
  ``Booster.inplace_predict`` (nthread 1) on the same 10,000 rows.
- ``torchvision_<name>``: model-zoo networks beyond the benchmark's own set (ShuffleNetV2's odd channel counts and
  channel shuffle, EfficientNet's SiLU and squeeze-and-excitation, MobileNetV3's HardSwish, DenseNet's
  concatenations, ConvNeXt's 7x7 depthwise convs and layer norms), with seeded random weights and non-trivial
  BatchNorm statistics, exported with ``torch.onnx.export`` (ONNX, opset 17, 1x3x224x224); baselines torch (the traced
  module) and onnxruntime (the ONNX file).

``python -m bench.frameworks build NAME FOLDER`` writes a source's files (archives, inputs, baselines' files) and a
``source.json`` describing them; ``python -m bench.frameworks latency REQUEST.json RESULT.json`` times them. Each
runs in a child of bench.py so that no framework is imported into the parent.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

SEQ = 128
#: name -> title, in the order the README lists them.
SOURCES = {
    "bert_minilm": "BERT-family encoder (MiniLM-L6-sized, seq 128)",
    "keras_mobilenet_v2": "Keras MobileNetV2 (SavedModel)",
    "xgboost": "XGBoost 100 trees x depth 6 (10,000 x 20)",
}
#: torchvision classification networks compiled from their ONNX export: name -> title.
TORCHVISION = {
    "shufflenet_v2_x1_0": "ShuffleNetV2 x1.0", "efficientnet_b0": "EfficientNet-B0",
    "mobilenet_v3_large": "MobileNetV3-Large", "densenet121": "DenseNet-121", "convnext_tiny": "ConvNeXt-T",
}
SOURCES.update({f"torchvision_{name}": f"torchvision {title}" for name, title in TORCHVISION.items()})


def _pack(folder: Path, name: str, files: dict[str, Path]) -> Path:
    """``name``: a model.tar.gz holding ``files`` (archive name -> file or folder)."""
    import tarfile

    archive = folder / name
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for arcname, path in files.items():
            tar.add(path, arcname=arcname)
    return archive


# --- builders (each writes FOLDER/source.json) -----------------------------------------------------------------

def build_bert_minilm(folder: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from tests.torchvision_ops import declare_torchvision_ops

    _keep = declare_torchvision_ops()  # noqa: F841  (transformers imports torchvision: see that function)
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)
    bert = BertModel(config).eval()

    class Encoder(torch.nn.Module):  # as sentence-embedding users wrap it for tracing and export: two tensors out
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)
            return out[0], out[1]

    model = Encoder().eval()
    ids = torch.randint(0, config.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, SEQ, dtype=torch.int64)
    mask[:, -16:] = 0  # padded tail: the mask matters
    with torch.no_grad():
        torch.jit.trace(model, (ids, mask), strict=False).save(str(folder / "model.pth"))
        torch.onnx.export(model, (ids, mask), str(folder / "model.onnx"), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state", "pooler_output"])
    np.savez(folder / "inputs.npz", input_ids=ids.numpy(), attention_mask=mask.numpy())
    shapes = {"input_ids": [1, SEQ], "attention_mask": [1, SEQ]}
    return {
        "inputs": "inputs.npz", "reference": "torch",
        "packages": {
            "neocompile (TorchScript)": {"archive": _pack(folder, "torchscript.tar.gz", {"model.pth": folder / "model.pth"}).name,
                                         "framework": "PYTORCH", "data_input_config": shapes,
                                         "compiler_options": {"dtype": "int64"}},
            "neocompile (ONNX)": {"archive": _pack(folder, "onnx.tar.gz", {"model.onnx": folder / "model.onnx"}).name,
                                  "framework": "ONNX", "data_input_config": shapes},
        },
        "baselines": {"torch": {"kind": "torchscript", "file": "model.pth"},
                      "onnxruntime": {"kind": "onnxruntime", "file": "model.onnx"}},
    }


def build_keras_mobilenet_v2(folder: Path) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    # Logits out (no softmax): with random weights the softmax saturates to exact 0/1, which would hide differences.
    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
    saved = folder / "saved_model"
    model.export(str(saved))  # a SavedModel with a serving_default signature, as TF Serving and Neo take it
    x = np.random.default_rng(0).standard_normal((1, 224, 224, 3)).astype(np.float32)
    name = model.inputs[0].name
    np.savez(folder / "inputs.npz", **{name: x})
    import tf2onnx

    spec = (tf.TensorSpec((1, 224, 224, 3), tf.float32, name=name),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(folder / "model.onnx"))
    return {
        "inputs": "inputs.npz", "reference": "tensorflow",
        "packages": {"neocompile (SavedModel)": {"archive": _pack(folder, "savedmodel.tar.gz", {"saved_model": saved}).name,
                                                 "framework": "TENSORFLOW", "data_input_config": {name: [1, 224, 224, 3]}}},
        "baselines": {"tensorflow": {"kind": "savedmodel", "file": "saved_model"},
                      "onnxruntime": {"kind": "onnxruntime", "file": "model.onnx"}},
    }


def build_xgboost(folder: Path) -> dict[str, Any]:
    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.standard_normal((10_000, 20)).astype(np.float32)
    y = x[:, 0] * 2 + np.sin(x[:, 1] * 3) + x[:, 2] * x[:, 3] + rng.standard_normal(10_000) * 0.1
    booster = xgb.train({"max_depth": 6, "eta": 0.1, "objective": "reg:squarederror", "nthread": 1},
                        xgb.DMatrix(x, label=y), num_boost_round=100)
    booster.save_model(str(folder / "xgboost-model.json"))
    np.savez(folder / "inputs.npz", data=x)
    return {
        "inputs": "inputs.npz", "reference": "xgboost",
        "packages": {"neocompile": {"archive": _pack(folder, "xgboost.tar.gz", {"xgboost-model": folder / "xgboost-model.json"}).name,
                                    "framework": "XGBOOST", "data_input_config": None}},
        "baselines": {"xgboost": {"kind": "xgboost", "file": "xgboost-model.json"}},
    }


def build_torchvision(name: str, folder: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from tests.torchvision_ops import declare_torchvision_ops

    _keep = declare_torchvision_ops()  # noqa: F841  (torchvision beside the CPU build of torch)
    import torchvision.models

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32))
    torch.onnx.export(model, (x,), str(folder / "model.onnx"), input_names=["data"], opset_version=17, dynamo=False)
    torch.jit.save(torch.jit.trace(model, (x,)), str(folder / "model.pth"))
    np.savez(folder / "inputs.npz", data=x.numpy())
    return {
        "inputs": "inputs.npz", "reference": "torch",
        "packages": {"neocompile (ONNX)": {"archive": _pack(folder, "onnx.tar.gz", {"model.onnx": folder / "model.onnx"}).name,
                                           "framework": "ONNX", "data_input_config": {"data": [1, 3, 224, 224]}}},
        "baselines": {"torch": {"kind": "torchscript", "file": "model.pth"},
                      "onnxruntime": {"kind": "onnxruntime", "file": "model.onnx"}},
    }


BUILDERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "bert_minilm": build_bert_minilm, "keras_mobilenet_v2": build_keras_mobilenet_v2, "xgboost": build_xgboost,
    **{f"torchvision_{name}": (lambda folder, name=name: build_torchvision(name, folder)) for name in TORCHVISION},
}


def build(name: str, folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    source = BUILDERS[name](folder)
    (folder / "source.json").write_text(json.dumps(source, indent=1))
    return source


# --- the timing child ------------------------------------------------------------------------------------------

def _baseline(kind: str, path: Path, inputs: dict[str, Any], threads: int) -> Callable[[], Any]:
    """A call that runs the framework once on ``inputs`` and returns its first output as numpy."""
    import numpy as np

    if kind == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        feed = dict(zip(names, inputs.values())) if set(names) != set(inputs) else inputs
        return lambda: sess.run(None, feed)[0]
    if kind == "torchscript":
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        module = torch.jit.load(str(path)).eval()
        args = [torch.from_numpy(v) for v in inputs.values()]

        def run_torch():
            with torch.inference_mode():
                out = module(*args)
            out = out[0] if isinstance(out, (tuple, list)) else (next(iter(out.values())) if isinstance(out, dict) else out)
            return out.numpy()
        return run_torch
    if kind == "savedmodel":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]
        args = {k.split(":")[0]: tf.constant(v) for k, v in inputs.items()}

        def run_tf():
            out = fn(**args)
            return next(iter(out.values())).numpy()
        return run_tf
    if kind == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster(model_file=str(path))
        booster.set_param({"nthread": threads})
        x = next(iter(inputs.values()))
        return lambda: np.asarray(booster.inplace_predict(x))
    raise ValueError(f"unknown baseline kind {kind!r}")


def latency(req: dict[str, Any]) -> dict[str, Any]:
    """Each package and baseline of one source, timed like bench.measure.latency (interleaved rounds, medians)."""
    import numpy as np

    from bench.measure import _open_model, timed

    folder, threads = Path(req["folder"]), req["threads"]
    source = json.loads((folder / "source.json").read_text())
    with np.load(folder / source["inputs"]) as z:
        inputs = {k: z[k] for k in z.files}
    runners: dict[str, Callable[[], Any]] = {}
    how: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, spec in source["baselines"].items():
        try:
            runners[name] = _baseline(spec["kind"], folder / spec["file"], inputs, threads)
            how[name] = f"{spec['kind']} ({threads} thread(s))"
        except Exception as exc:  # a baseline that cannot run is reported; the others still run
            errors[name] = f"{type(exc).__name__}: {exc}"
    for name, artifact in req["packages"].items():
        try:
            model, how[name] = _open_model(artifact, threads)
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        names = [i["name"] for i in model.meta["Model"]["Inputs"]]
        feed = inputs if set(names) == set(inputs) else list(inputs.values())
        runners[name] = lambda model=model, feed=feed: model.run(feed)[0]
    if source["reference"] not in runners:
        return {name: {"error": msg} for name, msg in errors.items()}
    return timed(runners, how, errors, req["budget_s"], req["warmup"], source["reference"])


if __name__ == "__main__":
    if sys.argv[1] == "build":
        print(json.dumps(build(sys.argv[2], Path(sys.argv[3]))))
    else:
        request, result = sys.argv[2:4]
        Path(result).write_text(json.dumps(latency(json.loads(Path(request).read_text())), indent=1))
