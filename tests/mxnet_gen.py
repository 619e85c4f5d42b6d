"""Build MXNet test checkpoints and mxnet's own outputs; run with the side virtualenv's Python (mxnet 1.9.1).

    .venv-mxnet/bin/python tests/mxnet_gen.py OUT_DIR

Writes, per model NAME: ``NAME/<prefix>-symbol.json`` + ``NAME/<prefix>-NNNN.params`` (the checkpoint as MXNet
writes it), ``NAME/input.npy`` and ``NAME/output<i>.npy`` (mxnet's outputs on that input, inference mode), and
``NAME/params.npz`` (what ``mx.nd.load`` reads from the .params file, for the reader's test). ``models.json`` lists
the models with their input shape. Weights are random (no download); BatchNorm statistics are randomized too so that
folding them is exercised. Runs in the side virtualenv only: mxnet 1.9.1 needs numpy < 1.24.
"""
from __future__ import annotations

import json
import os
import sys

import mxnet as mx
import numpy as np
from mxnet import gluon

SEED = 7


def _randomize(params: dict, rng: np.random.Generator) -> None:
    """BatchNorm gammas, betas and running statistics away from their 1/0 defaults."""
    for name, p in params.items():
        shape = p.shape
        if name.endswith("running_var") or name.endswith("moving_var"):
            p.set_data(mx.nd.array(rng.uniform(0.5, 2.0, shape)))
        elif name.endswith("running_mean") or name.endswith("moving_mean"):
            p.set_data(mx.nd.array(rng.normal(0, 0.5, shape)))
        elif name.endswith("gamma"):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, shape)))
        elif name.endswith("beta"):
            p.set_data(mx.nd.array(rng.normal(0, 0.2, shape)))
        elif name.endswith("alpha"):  # PReLU
            p.set_data(mx.nd.array(rng.uniform(0.1, 0.3, shape)))


def _dump_params(path: str, folder: str) -> None:
    loaded = mx.nd.load(path)
    np.savez(os.path.join(folder, "params.npz"), **{k: v.asnumpy() for k, v in loaded.items()})


def _gluon(name: str, net: gluon.HybridBlock, shape: tuple, out: str, rng) -> dict:
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    net.initialize(mx.init.Xavier(magnitude=2.0))
    x = mx.nd.array(rng.standard_normal(shape).astype(np.float32))
    net(x)  # shapes known
    _randomize({k: v for k, v in net.collect_params().items()}, rng)
    net.hybridize(static_alloc=True)
    y = net(x)
    net.export(os.path.join(folder, name), epoch=0)
    ys = y if isinstance(y, (list, tuple)) else [y]
    np.save(os.path.join(folder, "input.npy"), x.asnumpy())
    for i, t in enumerate(ys):
        np.save(os.path.join(folder, f"output{i}.npy"), t.asnumpy())
    _dump_params(os.path.join(folder, f"{name}-0000.params"), folder)
    return {"shape": list(shape), "prefix": name, "epoch": 0, "outputs": len(ys)}


class _MLP(gluon.HybridBlock):
    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.fc1 = gluon.nn.Dense(32)
            self.act1 = gluon.nn.PReLU()
            self.fc2 = gluon.nn.Dense(16, flatten=False)
            self.act2 = gluon.nn.ELU(alpha=0.7)
            self.fc3 = gluon.nn.Dense(5)

    def hybrid_forward(self, F, x):
        h = F.Activation(self.fc1(x), act_type="tanh")
        h = self.act2(self.fc2(self.act1(h)))
        logits = self.fc3(h)
        return F.softmax(logits, axis=-1), logits


def _classic_symbol() -> mx.sym.Symbol:
    """A symbolic-API network with the constructs Neo-era checkpoints hold (see the module docstring of the test)."""
    data = mx.sym.Variable("data")
    x = mx.sym.Convolution(data, num_filter=8, kernel=(3, 3), pad=(1, 1), name="conv1")
    x = mx.sym.BatchNorm(x, name="bn1")  # fix_gamma=True (MXNet's default): gamma is read as 1
    x = mx.sym.LeakyReLU(x, act_type="leaky", slope=0.1, name="lrelu1")
    x = mx.sym.Convolution(x, num_filter=8, num_group=8, kernel=(3, 3), pad=(2, 2), dilate=(2, 2), no_bias=True,
                           name="dwconv")
    x = mx.sym.BatchNorm(x, fix_gamma=False, eps=1e-5, axis=1, name="bn2")
    x = mx.sym.Activation(x, act_type="relu", name="relu2")
    p1 = mx.sym.Pooling(x, kernel=(3, 3), stride=(2, 2), pool_type="max", pooling_convention="full", name="maxpool")
    p2 = mx.sym.Pooling(x, kernel=(3, 3), stride=(2, 2), pool_type="avg", pooling_convention="full", name="avgpool")
    c = mx.sym.Concat(p1, p2, dim=1, name="concat1")  # 16 x 8 x 8
    d = mx.sym.Deconvolution(c, num_filter=8, kernel=(4, 4), stride=(2, 2), pad=(1, 1), no_bias=False, name="deconv")
    halves = mx.sym.SliceChannel(d, num_outputs=2, axis=1, name="split")  # 2 x (4 x 16 x 16)
    gated = halves[0] * mx.sym.Activation(halves[1], act_type="sigmoid")
    r = mx.sym.Reshape(gated, shape=(0, -4, 2, -1, -2), name="reshape_split")  # N, 2, 2, 16, 16
    r = mx.sym.Reshape(r, shape=(0, -3, -2), name="reshape_merge")  # N, 4, 16, 16
    u = mx.sym.UpSampling(p1, scale=2, sample_type="nearest", num_args=1, name="up")  # 8 x 16 x 16
    u = u + mx.sym.UpSampling(p1, scale=2, sample_type="bilinear", num_filter=8, num_args=2, name="upb")
    z = mx.sym.Concat(r, u, dim=1, name="concat2")  # 12 x 16 x 16
    scale = mx.sym.Variable("channel_scale", shape=(1, 12, 1, 1), init=mx.init.One())
    z = mx.sym.broadcast_mul(z, scale)
    z = mx.sym.clip(z * 2.0 + 1.0, -3.0, 3.0)
    z = 1.0 - z / 4.0
    t = mx.sym.transpose(z, axes=(0, 1, 3, 2))
    t = mx.sym.expand_dims(t, axis=2)
    t = mx.sym.Reshape(t, shape=(-1, 12, 16, 16))
    z = mx.sym.elemwise_add(z, t)
    g = mx.sym.Pooling(z, global_pool=True, pool_type="avg", kernel=(1, 1), name="gap")
    # Average pooling that leaves the padding out of the count, and a Deconvolution with adj, feed the classifier too.
    p3 = mx.sym.Pooling(x, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="avg", pooling_convention="full",
                        count_include_pad=False, name="avgpool_nopad")  # 8 x 9 x 9
    d2 = mx.sym.Deconvolution(p3, num_filter=4, kernel=(3, 3), stride=(2, 2), pad=(1, 1), adj=(1, 1), name="deconv2")
    f = mx.sym.Concat(mx.sym.Flatten(g), mx.sym.Flatten(mx.sym.Pooling(p3, global_pool=True, pool_type="avg",
                                                                       kernel=(1, 1))),
                      mx.sym.Flatten(mx.sym.Pooling(d2, global_pool=True, pool_type="max", kernel=(1, 1))), dim=1)
    f = mx.sym.FullyConnected(f, num_hidden=10, name="fc")
    out = mx.sym.SoftmaxOutput(f, name="softmax")
    # The feature map and the logits as heads too: the softmax alone would hide small errors of the layers before it.
    return mx.sym.Group([out, mx.sym.softmax(f * 0.5, axis=1, name="tempered"), mx.sym.identity(z, name="features"),
                         mx.sym.identity(f, name="logits")])


def _classic(out: str, rng) -> dict:
    name, shape = "classic", (1, 3, 16, 16)
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    sym = _classic_symbol()
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["softmax_label"], context=mx.cpu())
    mod.bind(data_shapes=[("data", shape)], label_shapes=[("softmax_label", (shape[0],))], for_training=False)
    x = rng.standard_normal(shape).astype(np.float32)
    for epoch in (1, 12):  # two checkpoints: Neo takes the highest epoch
        mod.init_params(initializer=mx.init.Xavier(magnitude=2.0), force_init=True)
        arg, aux = mod.get_params()
        for k in list(arg):
            if k.endswith("gamma"):
                arg[k] = mx.nd.array(rng.uniform(0.5, 1.5, arg[k].shape))
            elif k.endswith("beta") or k.endswith("bias") or k == "channel_scale":
                arg[k] = mx.nd.array(rng.normal(0, 0.3, arg[k].shape))
        for k in list(aux):
            aux[k] = mx.nd.array(rng.uniform(0.5, 2.0, aux[k].shape) if k.endswith("var")
                                 else rng.normal(0, 0.5, aux[k].shape))
        mod.set_params(arg, aux)
        mod.save_checkpoint(os.path.join(folder, name), epoch)
    mod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
    outs = [o.asnumpy() for o in mod.get_outputs()]
    np.save(os.path.join(folder, "input.npy"), x)
    for i, o in enumerate(outs):
        np.save(os.path.join(folder, f"output{i}.npy"), o)
    _dump_params(os.path.join(folder, f"{name}-0012.params"), folder)
    return {"shape": list(shape), "prefix": name, "epoch": 12, "outputs": len(outs)}


def _dtypes(out: str) -> dict:
    """A .params file with one array of every dtype mxnet saves, plus a key without arg:/aux:."""
    folder = os.path.join(out, "dtypes")
    os.makedirs(folder, exist_ok=True)
    arrays = {f"arg:{dt}": mx.nd.array(np.arange(12).reshape(3, 4) - 3, dtype=dt)
              for dt in ("float32", "float64", "float16", "uint8", "int8", "int32", "int64")}
    arrays["aux:vector"] = mx.nd.array(np.linspace(-1, 1, 7), dtype="float32")
    path = os.path.join(folder, "dtypes-0000.params")
    mx.nd.save(path, arrays)
    _dump_params(path, folder)
    mx.nd.save(os.path.join(folder, "gluon-style.params"), {"dense0_weight": mx.nd.ones((2, 2))})
    return {}


def main(out: str) -> None:
    mx.random.seed(SEED)
    rng = np.random.default_rng(SEED)
    models = {
        "resnet18": _gluon("resnet18", gluon.model_zoo.vision.resnet18_v1(pretrained=False, classes=10),
                           (1, 3, 32, 32), out, rng),
        "mobilenetv2": _gluon("mobilenetv2", gluon.model_zoo.vision.mobilenet_v2_0_25(pretrained=False, classes=10),
                              (1, 3, 32, 32), out, rng),
        "mlp": _gluon("mlp", _MLP(), (2, 20), out, rng),
        "classic": _classic(out, rng),
    }
    _dtypes(out)
    with open(os.path.join(out, "models.json"), "w") as f:
        json.dump({"mxnet": mx.__version__, "models": models}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
