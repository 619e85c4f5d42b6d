"""The CPU kernel templates (neocompile/cpu) at odd shapes: each case is compiled with the templates for the
native AVX2 target and for an ARM target, checked against onnxruntime, and checked to have really gone through
the template it is meant to exercise (a silent fall-through to the fallback would otherwise pass)."""
from __future__ import annotations

import io

import numpy as np
import pytest

from tests.need import need

torch = need("torch")


class Conv(torch.nn.Module):
    def __init__(self, cin, cout, k, stride=1, groups=1, pad=None, act=True, residual=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, k, stride, k // 2 if pad is None else pad, groups=groups)
        self.bn = torch.nn.BatchNorm2d(cout)
        self.act, self.residual = act, residual

    def forward(self, x):
        y = self.bn(self.conv(x))
        if self.act == "relu6":
            y = torch.nn.functional.relu6(y)
        elif self.act == "leaky":
            y = torch.nn.functional.leaky_relu(y, 0.1)
        elif self.act == "hardswish":
            y = torch.nn.functional.hardswish(y)
        elif self.act == "hardsigmoid":
            y = y * torch.nn.functional.hardsigmoid(y)
        elif self.act:
            y = torch.relu(y)
        return y + x if self.residual else y


class Linear(torch.nn.Module):
    def __init__(self, k, n, act="gelu"):
        super().__init__()
        self.fc = torch.nn.Linear(k, n)
        self.act = act

    def forward(self, x):
        y = self.fc(x)
        return torch.nn.functional.gelu(y) if self.act == "gelu" else y


class Attention(torch.nn.Module):
    """Batch matmul of two activations (Q K^T and P V), softmax and layer norm between them."""

    def __init__(self, dim, heads):
        super().__init__()
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.norm = torch.nn.LayerNorm(dim)
        self.heads = heads

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        return self.norm((p @ v).transpose(1, 2).reshape(b, s, d) + x)


class _Chain(torch.nn.Sequential):
    pass


class Dilated(torch.nn.Module):
    """DeepLabV3's ASPP branches: 3x3 convs at several rates side by side, summed."""

    def __init__(self, channels, rates):
        super().__init__()
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(channels, 16, 3, padding=r, dilation=r) for r in rates)

    def forward(self, x):
        return sum(torch.relu(conv(x)) for conv in self.convs)


class SqueezeExcite(torch.nn.Module):
    """EfficientNet's block tail: a conv with SiLU, then its channels scaled by ``sigmoid(conv(relu(conv(mean))))``;
    the last conv, over one pixel, gets the scale of the whole map as its epilogue."""

    def __init__(self, channels, squeezed):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 1)
        self.reduce = torch.nn.Conv2d(channels, squeezed, 1)
        self.expand = torch.nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        y = torch.nn.functional.silu(self.conv(x))
        scale = torch.sigmoid(self.expand(torch.relu(self.reduce(y.mean((2, 3), keepdim=True)))))
        return y * scale


class _Up(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.up = torch.nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)

    def forward(self, x):
        return torch.relu(self.up(x))


class Pool(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.max_pool2d(x, 3, 2, 1) + torch.nn.functional.avg_pool2d(x, 3, 2, 1)


# name: (module, input shape, template kinds that must appear in the kernel report[, the convs' layout]). The
# kernels run convs channels-last by default (CompilerOptions cpu-layout NHWC); the NCHW cases are the variants
# that only a conv left in the model's own layout takes (cpu-layout NCHW, or a graph the conversion skipped).
CASES = {
    "conv3x3_odd_channels": (lambda: Conv(5, 13, 3), (1, 5, 9, 11), {"conv2d"}),
    "conv3x3_residual": (lambda: Conv(24, 24, 3, residual=True), (2, 24, 10, 7), {"conv2d"}),
    "conv1x1": (lambda: Conv(40, 48, 1), (1, 40, 7, 7), {"conv2d"}),
    # 58 output channels (ShuffleNetV2): padded to 64 zero filters and sliced back
    "conv1x1_out_channels_not_whole_vectors": (lambda: Conv(24, 58, 1), (1, 24, 9, 7), {"conv2d"}),
    "conv3x3_out_channels_not_whole_vectors_nchw": (lambda: Conv(16, 58, 3), (2, 16, 6, 5), {"conv2d"}, "NCHW"),
    # small weights, a large output: channels-last, the tiles run in the output's own order
    "conv1x1_expand_small_weights": (lambda: Conv(6, 40, 1), (1, 6, 12, 20), {"conv2d"}),
    "conv1x1_nchw": (lambda: Conv(40, 48, 1), (1, 40, 7, 7), {"conv2d"}, "NCHW"),
    # >= 32 input channels: the padded input copy is stored channels-last
    "conv3x3_channels_last_nchw": (lambda: Conv(40, 24, 3), (2, 40, 9, 7), {"conv2d"}, "NCHW"),
    "conv1x1_few_channels_spatial_nchw": (lambda: Conv(6, 20, 1, residual=False), (2, 6, 3, 16), {"conv2d-spatial"}, "NCHW"),
    "conv3x3_few_channels_spatial_nchw": (lambda: Conv(3, 10, 3), (1, 3, 5, 24), {"conv2d-spatial"}, "NCHW"),
    # a strided 1x1 conv (ResNet's shortcut) runs as a stride-1 conv of its subsampled input; odd sizes keep the
    # last pixel (9 -> 5)
    "conv1x1_stride2_odd_nchw": (lambda: Conv(40, 48, 1, stride=2, pad=0), (2, 40, 9, 11), {"conv2d"}, "NCHW"),
    "conv1x1_stride2_odd": (lambda: Conv(40, 48, 1, stride=2, pad=0), (2, 40, 9, 11), {"conv2d"}),
    # a 1x1 conv over >= 256 channels: the tall one-vector tile (its rows consecutive floats of one channel)
    "conv1x1_deep_tall_tile_nchw": (lambda: Conv(256, 24, 1), (1, 256, 3, 14), {"conv2d"}, "NCHW"),
    "conv1x1_deep": (lambda: Conv(256, 24, 1), (1, 256, 3, 14), {"conv2d"}),
    # channels-last 1x1 convs run over pixels (h, w fused: 35 rows), their last row tile partial
    "conv1x1_pixel_rows": (lambda: Conv(24, 40, 1), (2, 24, 5, 7), {"conv2d"}),
    "conv1x1_pixel_rows_residual": (lambda: Conv(24, 24, 1, residual=True), (1, 24, 5, 7), {"conv2d"}),
    # a 3x3 conv over 4x29 pixels, h and w fused into 116 rows: 19 full 6-row tiles and a partial one
    "conv3x3_partial_row_tile": (lambda: Conv(16, 16, 3), (1, 16, 4, 29), {"conv2d"}),
    "conv7x7_stride2": (lambda: Conv(3, 16, 7, stride=2), (1, 3, 29, 29), {"conv2d"}),
    # a strided 3x3 conv from 16 channels over its 7x7 output pixels fused (49 rows, the last tile partial)
    "conv3x3_stride2_pixel_rows": (lambda: Conv(16, 24, 3, stride=2), (2, 16, 13, 13), {"conv2d"}),
    "conv3x3_stride2_one_pixel": (lambda: Conv(32, 64, 3, stride=2), (3, 32, 2, 2), {"conv2d"}),
    "conv_one_pixel": (lambda: Conv(20, 36, 1, act=False), (2, 20, 1, 1), {"conv2d"}),
    # rates 2 and 4 read the map, 9 and 12 only padding beyond the center tap (cut to 1x1 convs), over 7x9 pixels
    "conv_dilated_rates_beyond_the_map": (lambda: Dilated(8, (2, 4, 9, 12)), (1, 8, 7, 9), {"conv2d"}),
    # a one-pixel conv whose epilogue scales a whole 23x19 map (squeeze-and-excitation)
    "conv_one_pixel_scales_a_map": (lambda: SqueezeExcite(40, 10), (1, 40, 23, 19), {"conv2d"}),
    "grouped_conv": (lambda: Conv(24, 36, 3, groups=4), (1, 24, 9, 9), {"depthwise"}),
    "grouped_conv_nchw": (lambda: Conv(24, 36, 3, groups=4), (1, 24, 9, 9), {"depthwise"}, "NCHW"),
    "depthwise": (lambda: Conv(32, 32, 3, groups=32), (2, 32, 15, 13), {"depthwise"}),
    "depthwise_nchw": (lambda: Conv(32, 32, 3, groups=32), (2, 32, 15, 13), {"depthwise"}, "NCHW"),
    "depthwise_stride2": (lambda: Conv(24, 24, 3, stride=2, groups=24), (1, 24, 14, 14), {"depthwise"}),
    "depthwise_stride2_nchw": (lambda: Conv(24, 24, 3, stride=2, groups=24), (1, 24, 14, 14), {"depthwise"}, "NCHW"),
    # odd padded width: the de-interleaved copy keeps a padded phase and iterates the input order
    "depthwise_stride2_odd_nchw": (lambda: Conv(16, 16, 3, stride=2, groups=16), (2, 16, 15, 17), {"depthwise"}, "NCHW"),
    "depthwise_stride2_odd": (lambda: Conv(16, 16, 3, stride=2, groups=16), (2, 16, 15, 17), {"depthwise"}),
    "depthwise_5x5": (lambda: Conv(8, 8, 5, groups=8), (1, 8, 11, 9), {"depthwise"}),
    "depthwise_one_pixel": (lambda: Conv(16, 16, 3, groups=16), (2, 16, 1, 1), {"depthwise"}),
    # two outputs per input channel: not plane by plane (each input plane feeds two output planes)
    "depthwise_multiplier2": (lambda: Conv(8, 16, 3, groups=8), (1, 8, 10, 10), {"depthwise"}),
    "dense_gemv": (lambda: Linear(100, 37), (1, 100), {"matmul"}),
    # 40 outputs are five vectors of 8: a five-vector tile (five accumulator chains), not one vector at a time
    "dense_gemv_five_vectors": (lambda: Linear(64, 40, act=None), (1, 64), {"matmul"}),
    "dense_batch": (lambda: Linear(64, 80, act=None), (8, 64), {"matmul"}),
    "ffn_3d": (lambda: Linear(48, 200), (2, 17, 48), {"matmul"}),
    "attention": (lambda: Attention(48, 4), (2, 19, 48), {"matmul"}),
    "pooling": (Pool, (1, 16, 15, 15), set()),
    # a transposed conv (lowered by TVM in NCHW only) between channels-last convs: it keeps NCHW, the convs do not
    "conv_transpose_between_convs": (lambda: _Chain(Conv(8, 16, 3), _Up(16), Conv(16, 8, 3)), (1, 8, 6, 5), {"conv2d"}),
    # Clip (ReLU6) and LeakyRelu have no layout rule in TVM: rewritten as maximum/minimum, they stay channels-last
    "relu6_leaky_channels_last": (lambda: _Chain(Conv(8, 16, 3, act="relu6"), Conv(16, 16, 3, groups=16, act="leaky"),
                                                 Conv(16, 8, 1, act="relu6")), (1, 8, 11, 9), {"conv2d", "depthwise"}),
    # HardSwish and HardSigmoid (MobileNetV3), whose clips TVM's ONNX converters build from Python ints: channels-last
    "relu6_hardswish_channels_last": (lambda: _Chain(Conv(8, 16, 3, act="hardswish"),
                                                     Conv(16, 8, 1, act="hardsigmoid")), (1, 8, 11, 9), {"conv2d"}),
}


def _onnx_bytes(module, shape) -> bytes:
    torch.manual_seed(0)
    net = module().eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics, folded into the conv by the exporter
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.randn(*shape),), buf, input_names=["data"], opset_version=17, dynamo=False)
    return buf.getvalue()


def _compile(onnx_bytes: bytes, shape, target_name: str, tmp_path, kernels: bool = True, layout: str = "NHWC"):
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    from neocompile.compiler import compile_library
    from neocompile.targets import get_target

    mod = from_onnx(onnx.load_from_string(onnx_bytes), {"data": list(shape)}, keep_params_in_input=False)
    out = tmp_path / f"{target_name}.so"
    return compile_library(mod, get_target(target_name), {"cpu-kernels": kernels, "cpu-layout": layout}, out)


def _reference(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return sess.run(None, {"data": x})[0]


def _check_report(kernels: dict[str, str], expected: set[str]) -> None:
    assert kernels, "the compile produced no kernel report"
    assert "unscheduled" not in kernels.values(), kernels
    templates = {how.split(": ")[1].split()[0] for how in kernels.values() if how.startswith("template:")}
    assert expected <= templates, f"expected templates {expected}, got {kernels}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_template_native(case, tmp_path):
    from neocompile.runtime import run_library

    module, shape, expected, *layout = CASES[case]
    data = _onnx_bytes(module, shape)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    compiled = _compile(data, shape, "ml_c4", tmp_path, layout=layout[0] if layout else "NHWC")
    _check_report(compiled.kernels, expected)
    has_conv = case.startswith(("conv", "grouped", "depthwise", "relu6"))
    assert compiled.conv_layout == ((layout[0] if layout else "NHWC") if has_conv else None), compiled.conv_layout
    got = run_library(compiled.path, [x])[0]
    np.testing.assert_allclose(got, _reference(data, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target_name", ["rk3399", "rasp3b"])
def test_templates_under_qemu(target_name, tmp_path):
    """One network holding every template, compiled for an ARM device and run under qemu with the bundled runtime."""
    from neocompile.device import runner
    from neocompile.targets import get_target

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = Conv(3, 12, 3, stride=2)
            self.dw = Conv(12, 12, 3, groups=12)
            self.pw = Conv(12, 20, 1)
            self.fc = Linear(20, 10, act=None)

        def forward(self, x):
            y = self.pw(self.dw(self.stem(x)))
            return self.fc(torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))

    shape = (2, 3, 17, 17)
    data = _onnx_bytes(Net, shape)
    target = get_target(target_name)
    compiled = _compile(data, shape, target_name, tmp_path)
    _check_report(compiled.kernels, {"conv2d", "depthwise", "matmul"})
    ok, why = runner.can_emulate(target)
    assert ok, why
    package = tmp_path / "package"
    (package / "bin").mkdir(parents=True)
    from neocompile import package as package_mod

    driver = runner.build_driver(target)
    package_mod.add_runtime(package, driver.parent, driver)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    got = runner.run_library(compiled.path, target, [x], package_dir=package)[0]
    np.testing.assert_allclose(got, _reference(data, x), rtol=1e-4, atol=1e-4)


def test_kernels_off_is_tvm_default(tmp_path):
    """CompilerOptions cpu-kernels=false leaves TVM's own lowering (the bench's baseline) and reports nothing."""
    module, shape, *_ = CASES["conv1x1"]
    compiled = _compile(_onnx_bytes(module, shape), shape, "ml_c4", tmp_path, kernels=False)
    assert compiled.kernels == {}


def _variant_net():
    class Net(torch.nn.Module):
        """A conv at a width that tall tiles divide (14), a stride-1 3x3 with a residual, a depthwise conv and a
        dense layer: every kind of anchor a template variant may change."""

        def __init__(self):
            super().__init__()
            self.pw = Conv(16, 32, 1)
            self.c3 = Conv(32, 32, 3, residual=True)
            self.dw = Conv(32, 32, 3, groups=32)
            self.fc = Linear(32, 24, act=None)

        def forward(self, x):
            y = self.dw(self.c3(self.pw(x)))
            return self.fc(torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))

    return Net


def _variants():
    from neocompile.cpu.templates import VARIANTS

    return VARIANTS


@pytest.mark.parametrize("knobs", _variants(), ids=lambda k: ",".join(f"{a}={b}" for a, b in k.as_dict().items()))
def test_template_variants_stay_correct(knobs, tmp_path, monkeypatch):
    """Tuning may schedule any kernel with any of the template's variants: each one, applied to every kernel of a
    network, still matches onnxruntime, and where it applies the kernel report shows it."""
    from neocompile.cpu import pipeline
    from neocompile.runtime import run_library

    monkeypatch.setattr(pipeline, "func_knobs", lambda func: knobs)
    shape = (2, 16, 14, 14)
    data = _onnx_bytes(_variant_net(), shape)
    compiled = _compile(data, shape, "ml_c4", tmp_path)
    _check_report(compiled.kernels, {"conv2d", "depthwise", "matmul"})
    assert all(how.endswith("(tuned knobs)") for how in compiled.kernels.values() if how.startswith("template:"))
    if knobs.rows is not None and 4 % knobs.vectors == 0:  # fits the 1x1 conv (196 pixels, 32 channels)
        assert any(f" {knobs.rows}x{knobs.vectors}x" in how for how in compiled.kernels.values()), compiled.kernels
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    got = run_library(compiled.path, [x])[0]
    np.testing.assert_allclose(got, _reference(data, x), rtol=1e-4, atol=1e-4)


def test_tuned_knobs_reach_the_pipeline_through_the_kernel_attribute():
    """apply_records attaches the winning variant's knobs as a PrimFunc attribute; the pipeline reads them."""
    import tvm
    from tvm.script import tirx as T  # noqa: F401

    from neocompile.cpu import pipeline
    from neocompile.cpu.templates import Knobs

    @tvm.script.ir_module
    class M:  # noqa: D401 - a stand-in PrimFunc: only its attributes matter here
        @T.prim_func
        def main(a: T.Buffer((4,), "float32")):
            T.func_attr({"neocompile.template_knobs": '{"rows": 7, "vectors": 1, "unknown": 3}'})
            a[0] = T.float32(0)

    assert pipeline.func_knobs(M["main"]) == Knobs(rows=7, vectors=1)
    assert pipeline.func_knobs(M["main"].without_attr(pipeline.KNOBS)) is None


def test_strided_pointwise_conv_reads_a_subsampled_copy(tmp_path):
    """The strided 1x1 conv is rewritten before legalization: a kernel of its own copies the pixels it reads (a
    quarter of the input), and the conv runs the row-packed stride-1 template, not a conv that skips three pixels in
    four of a full-size copy (the model's own NCHW layout: channels-last, a pixel's channels are contiguous anyway)."""
    module, shape, *_ = CASES["conv1x1_stride2_odd_nchw"]
    compiled = _compile(_onnx_bytes(module, shape), shape, "ml_c4", tmp_path, layout="NCHW")
    assert any(name.startswith("strided_slice") for name in compiled.kernels), compiled.kernels
    convs = [how for name, how in compiled.kernels.items() if "conv2d" in name]
    assert len(convs) == 1 and convs[0].startswith("template: conv2d "), compiled.kernels


def test_channels_last_graph_keeps_one_transpose_each_way():
    """The whole graph runs channels-last: one transpose of the input, one before the flatten, none around the
    elementwise ops between the convs (ONNX Clip arrives as TOPI kernels, LeakyRelu as an op without a layout
    rule), and the weights keep their layout (no transposed copy: the templates pack them anyway)."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from neocompile.cpu.constfold import fold_constants_numpy
    from neocompile.cpu.layout import channels_last

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _Chain(Conv(3, 16, 3, stride=2, act="relu6"), Conv(16, 16, 3, groups=16, act="leaky"),
                               Conv(16, 16, 1, act="relu6", residual=True))
            self.fc = Linear(16, 10, act=None)

        def forward(self, x):
            y = torch.nn.functional.max_pool2d(self.body(x), 2)
            return self.fc(torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))

    shape = (1, 3, 16, 16)
    mod = from_onnx(onnx.load_from_string(_onnx_bytes(Net, shape)), {"data": list(shape)}, keep_params_in_input=False)
    converted = channels_last(fold_constants_numpy(mod))
    ops: list[str] = []
    relax.analysis.post_order_visit(converted["main"], lambda e: ops.append(e.op.name) if isinstance(e, relax.Call)
                                    and isinstance(e.op, tvm.ir.Op) else None)
    convs = [e for e in ops if e == "relax.nn.conv2d"]
    assert len(convs) == 3, ops
    assert ops.count("relax.permute_dims") == 2, ops
    assert "relax.call_tir" not in ops and "relax.nn.leakyrelu" not in ops, ops
    text = converted["main"].script()
    assert text.count('data_layout="NHWC"') == 3 and text.count('kernel_layout="OIHW"') == 3, text


def test_cpu_layout_option():
    from neocompile.errors import ValidationError
    from neocompile.options import parse

    assert parse('{"cpu_layout": "nchw"}') == {"cpu-layout": "NCHW"}
    with pytest.raises(ValidationError, match=r"CompilerOptions.cpu-layout: 'NC' is not valid; expected one of NHWC, NCHW"):
        parse('{"cpu-layout": "NC"}')


def test_failed_layout_conversion_keeps_the_models_layout(tmp_path, monkeypatch):
    """A graph ConvertLayout cannot take is compiled in its own layout, still correct, and the kernel report says
    why."""
    from tvm import relax

    from neocompile.runtime import run_library

    def refuse(layouts):
        def run(mod):
            raise RuntimeError("ConvertLayout: no rule for this graph")
        return run

    monkeypatch.setattr(relax.transform, "ConvertLayout", refuse)
    module, shape, *_ = CASES["conv3x3_residual"]
    data = _onnx_bytes(module, shape)
    compiled = _compile(data, shape, "ml_c4", tmp_path)
    assert compiled.conv_layout == "NCHW (the channels-last conversion failed: ConvertLayout: no rule for this graph)"
    _check_report(compiled.kernels, {"conv2d"})
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(run_library(compiled.path, [x])[0], _reference(data, x), rtol=1e-4, atol=1e-4)


def test_an_op_moved_to_nhwc_without_a_lowering_keeps_the_models_layout(tmp_path, monkeypatch):
    """ConvertLayout lets layout-carrying ops follow the convs; one that TVM would not lower in NHWC (here: pooling,
    declared so for the test) sends the whole graph back to its own layout before anything is built."""
    from neocompile.cpu import layout
    from neocompile.runtime import run_library

    monkeypatch.setattr(layout, "NHWC_LOWERED", {"relax.nn.conv2d"})

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = Conv(8, 16, 3)

        def forward(self, x):
            return torch.nn.functional.max_pool2d(self.conv(x), 2)

    shape = (1, 8, 10, 10)
    data = _onnx_bytes(Net, shape)
    compiled = _compile(data, shape, "ml_c4", tmp_path)
    assert compiled.conv_layout == ("NCHW (the channels-last conversion failed: relax.nn.max_pool2d in NHWC has no "
                                    "lowering in TVM)"), compiled.conv_layout
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(run_library(compiled.path, [x])[0], _reference(data, x), rtol=1e-4, atol=1e-4)


def test_partial_row_tile_runs_as_its_own_loop():
    """A 1x1 channels-last conv runs over its 35 pixels in 2-row tiles of five vectors (40 channels), the last one
    partial: the row-tile loop is
    split into the full tiles and the tail (TVM's LoopPartition, from the template's hint), so the full tiles'
    accumulator updates carry no predicate. This needs the kernel indexed in int32 (``pipeline._legalize``); with
    int64 indices the hint is lost and the reduction loop runs once, predicated."""
    import tvm
    from tvm import s_tir, tirx

    how, sch = _schedule_conv((1, 5, 7, 24), 40)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})
    assert how == "template: conv2d 2x5x8 packed", how  # 35 pixels: 17 full 2-row tiles and 1 row
    lowering = [s_tir.transform.LowerInitBlock(), s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
                s_tir.transform.ConvertBlocksToOpaque(), s_tir.transform.CompactBufferAllocation(),
                s_tir.transform.LowerOpaqueBlock(), tirx.transform.FlattenBuffer(), tirx.transform.NarrowDataType(32),
                s_tir.transform.LoopPartition()]
    with target:
        text = tvm.transform.Sequential(lowering)(tvm.IRModule({"main": sch.mod["main"]})).script()
    assert text.count("in range(24)") == 2, text  # the reduction over 24 channels: full tiles, then the tail
    assert "for ax1_0 in T.parallel(17)" in text, text  # the 17 full tiles in a (parallel: batch 1) loop of their own


def _schedule_conv(shape, out_channels, window=1, stride=1, groups=1, layout="NHWC", act=None):
    """(report line, schedule) of a conv (+ReLU, or ``act``) over ``shape`` in ``layout`` as the pipeline schedules
    it: weights of ones, padding ``window // 2``."""
    import tvm
    from tvm import relax, tirx

    from neocompile.cpu import pipeline

    channels = shape[3] if layout == "NHWC" else shape[1]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    weight = relax.const(np.ones((out_channels, channels // groups, window, window), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            conv = bb.emit(relax.op.nn.conv2d(x, weight, strides=stride, padding=window // 2, groups=groups,
                                              data_layout=layout))
            out = bb.emit_output((act or relax.op.nn.relu)(conv))
        bb.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})
    with target:
        mod = pipeline.prepare(bb.get(), target, layout=layout)
    func = next(f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc) and "conv2d" in gv.name_hint)
    return pipeline.schedule_primfunc(func, target, pipeline.CpuInfo(256, 16))


def _conv_tile(shape, out_channels, window, stride, act=None):
    """How the pipeline schedules a channels-last conv (+ReLU, or ``act``) over ``shape`` (its report line)."""
    return _schedule_conv(shape, out_channels, window, stride, act=act)[0]


@pytest.mark.parametrize("shape, out_channels, window, stride, expected", [
    ((1, 14, 14, 32), 64, 3, 2, "template: conv2d 6x2x8 packed"),  # 7x7 outputs fused: 6x2 tiles, not 7x1
    ((1, 14, 14, 40), 48, 1, 2, "template: conv2d 6x2x8 packed"),  # a strided 1x1 conv (ResNet's shortcut) too
    ((1, 14, 14, 3), 64, 7, 2, "template: conv2d 7x1x8 packed"),  # 3 channels: along the output row only
    ((1, 14, 14, 8), 64, 3, 1, "template: conv2d 2x4x8 packed"),  # 8 channels, stride 1: the same
])
def test_conv_runs_over_fused_pixels_from_enough_input_channels(shape, out_channels, window, stride, expected):
    """A channels-last conv with a window or a stride runs its register tiles over its output pixels (h and w
    fused) when it reduces over at least 16 input channels; below that the per-pixel input addresses cost more than
    the better tile saves (a 3x3 conv from 3 channels ran 1.4x onnxruntime fused), and it runs along its rows."""
    assert _conv_tile(shape, out_channels, window, stride) == expected


@pytest.mark.parametrize("in_channels, out_channels, expected", [
    (16, 96, "template: conv2d 6x2x8 packed"),  # 4x3 would use all 16 registers: 6x2, as many accumulators
    (24, 144, "template: conv2d 6x2x8 packed"),
    (256, 96, "template: conv2d 4x3x8 packed"),  # a long reduction: the most multiply-adds per load
    (24, 40, "template: conv2d 2x5x8 packed"),  # 40 channels: the spare register would cost accumulators (8x1)
])
def test_short_reduction_tile_keeps_a_register_for_its_epilogue(in_channels, out_channels, expected):
    """A 1x1 conv over few input channels (MobileNetV2's expansions) takes the tile that leaves a vector register
    for its epilogue (bias and clip) when one of as many accumulators does: with all 16 used, the accumulators
    went through memory before the epilogue (16->96 at 112x112: 0.93 -> 0.62 ms)."""
    from tvm import relax

    def relu6(x):
        return relax.op.minimum(relax.op.maximum(x, relax.const(np.float32(0))), relax.const(np.float32(6)))

    assert _conv_tile((1, 28, 28, in_channels), out_channels, 1, 1, act=relu6) == expected


def test_weights_are_packed_in_chunks_with_the_same_result():
    """The weight packing packs up to its budget per run and says it is ``unfinished`` while weights are left, so a
    compile holds source and packed copies of one chunk at a time; run to the end in chunks of one weight it
    leaves the same module as one run packing all of them."""
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from neocompile.cpu import CpuInfo, KernelReport, weight_steps
    from neocompile.cpu.constfold import FoldWeightPrepack
    from neocompile.targets import get_target

    def prepacks(mod) -> int:
        return mod["main"].script().count("_weight_prepack")

    shape = (1, 16, 14, 14)
    mod = from_onnx(onnx.load_from_string(_onnx_bytes(_variant_net(), shape)), {"data": list(shape)},
                    keep_params_in_input=False)
    target = get_target("ml_c4")
    with tvm.target.Target(target.target_dict({})):
        steps = weight_steps(CpuInfo.from_target(target), KernelReport())
        at = next(i for i, step in enumerate(steps) if isinstance(step, FoldWeightPrepack))
        for step in steps[:at]:
            mod = step(mod)
        waiting = prepacks(mod)
        assert waiting >= 3, mod["main"].script()
        whole = FoldWeightPrepack(budget=1 << 40)
        at_once = whole(mod)
        assert not whole.unfinished and prepacks(at_once) == 0
        chunked, runs = FoldWeightPrepack(budget=1), 0
        chunk = chunked(mod)
        while chunked.unfinished:
            runs += 1
            assert prepacks(chunk) == waiting - runs, chunk["main"].script()
            chunk = chunked(chunk)
        assert runs + 1 == waiting and prepacks(chunk) == 0
        tvm.ir.assert_structural_equal(chunk, at_once)


def test_matrix_vector_tile_takes_five_vectors_where_four_do_not_divide(tmp_path):
    """A matrix-vector product to 40 outputs (five vectors of 8, as 1000 classes are 125) runs five accumulator
    chains: with at most four vectors per tile only one would divide, and one chain ran at half onnxruntime's speed."""
    module, shape, *_ = CASES["dense_gemv_five_vectors"]
    compiled = _compile(_onnx_bytes(module, shape), shape, "ml_c4", tmp_path)
    assert "template: matmul 1x5x8 packed" in compiled.kernels.values(), compiled.kernels


def _depthwise_schedule(shape, stride, layout="NHWC"):
    """The scheduled TIR of a 3x3 depthwise conv (+ReLU) over ``shape`` (in ``layout``), as the pipeline makes it."""
    channels = shape[3] if layout == "NHWC" else shape[1]
    how, sch = _schedule_conv(shape, channels, 3, stride, groups=channels, layout=layout)
    assert how.startswith("template: depthwise"), how
    return sch.mod["main"].script()


def test_depthwise_band_keeps_its_padded_rows_within_l2():
    """A stride-2 channels-last depthwise conv at 112x112x96 would take 7 output rows per task (8 tasks), whose
    padded copy is 15 input rows of 114 x 96 floats (657 KB, past L2); the band is cut to 4 rows, 9 input rows
    (394 KB; 113 of the 114 padded columns, those a stride of 2 reads), 14 tasks. At 56x56x144, stride 1, 7 rows (9 input rows
    of 58 x 144 floats, 301 KB) fit and leave 8 tasks."""
    text = _depthwise_schedule((1, 112, 112, 96), 2)
    assert "T.parallel(14)" in text and "T.grid(9, 113, 12)" in text, text
    text = _depthwise_schedule((1, 56, 56, 144), 1)
    assert "T.parallel(8)" in text and "T.grid(9, 58, 18)" in text, text


def test_channels_last_padded_copy_is_one_pass():
    """Channels-last, the padded copy of a band is one pass whose condition holds for a whole pixel (no fill of
    the band with zeros first); channels-first the padded axis is the vector's, and the copy is a fill and then an
    unconditional copy of the interior."""
    assert "pad_const" not in _depthwise_schedule((1, 28, 28, 32), 2)
    assert "pad_const" in _depthwise_schedule((1, 32, 28, 28), 2, layout="NCHW")


def test_tile_epilogue_is_unrolled_in_whole_vectors():
    """The epilogue under a register tile (bias, clip) runs unrolled in vectors of the tile's lanes, so that it
    reads the accumulators at constant offsets and LLVM keeps them in registers (as one loop over a tile row's
    16 floats, they went to the stack after the reduction and back)."""
    from tvm import relax

    bias = relax.const(np.ones((96,), "float32"))
    how, sch = _schedule_conv((1, 12, 12, 16), 96, act=lambda conv: relax.op.nn.relu(relax.op.add(conv, bias)))
    assert how == "template: conv2d 6x2x8 packed", how
    text = sch.mod["main"].script()
    epilogue = text[text.rindex("update"):]
    assert "T.unroll(6)" in epilogue and "T.unroll(2)" in epilogue and "T.vectorized(8)" in epilogue, epilogue
    assert "T.vectorized(16)" not in epilogue, epilogue


def test_an_epilogue_over_a_whole_map_keeps_its_loops():
    """A one-pixel conv whose epilogue scales a 56x56 map (squeeze-and-excitation: ``sigmoid(conv) * x``) unrolls only
    the tile's own vectors; unrolled over the map too, it made 18,816 vector statements and 40 s of LLVM per kernel
    (EfficientNet-B0: 95 s in tvm.compile)."""
    import tvm
    from tvm import relax, tirx

    from neocompile.cpu import pipeline

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 1, 1, 4), "float32"))
    y = relax.Var("y", relax.TensorType((1, 56, 56, 96), "float32"))
    weight = relax.const(np.ones((96, 4, 1, 1), "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            conv = bb.emit(relax.op.nn.conv2d(x, weight, data_layout="NHWC"))
            out = bb.emit_output(relax.op.multiply(relax.op.sigmoid(conv), y))
        bb.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})
    with target:
        mod = pipeline.prepare(bb.get(), target, layout="NHWC")
    func = next(f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc) and "conv2d" in gv.name_hint)
    how, sch = pipeline.schedule_primfunc(func, target, pipeline.CpuInfo(256, 16))
    assert how.startswith("template: conv2d"), how
    epilogue = sch.mod["main"].script()
    epilogue = epilogue[epilogue.rindex("update"):]
    assert "T.unroll(56)" not in epilogue and "T.vectorized(8)" in epilogue, epilogue
    assert "T.unroll(6)" in epilogue, epilogue  # the tile's own 6 vectors still are


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_output_channels_are_padded_to_whole_vectors(layout, tmp_path):
    """A conv with 58 output channels runs with 64 filters, 6 of them zero, and its output sliced back to 58: tiled
    and packed like any other (unpadded it ran one scalar column at a time, 12x slower than onnxruntime)."""
    from neocompile.runtime import run_library

    shape = (1, 32, 10, 9)
    data = _onnx_bytes(lambda: Conv(32, 58, 1), shape)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    compiled = _compile(data, shape, "ml_c4", tmp_path, layout=layout)
    convs = [how for name, how in compiled.kernels.items() if "conv2d" in name]
    assert convs and all(how.startswith("template: conv2d") and how.endswith("packed") for how in convs), compiled.kernels
    got = run_library(compiled.path, [x])[0]
    assert got.shape == (1, 58, 10, 9)
    np.testing.assert_allclose(got, _reference(data, x), rtol=1e-4, atol=1e-4)



def test_channels_last_concatenation_runs_each_input_as_its_own_loop():
    """A concatenation along the channels (channels-last; DenseNet's, with its batch norm and ReLU inlined) picks
    each element's input by ``if_then_else`` on the innermost index: the fallback's vector loop is split at the
    inputs' boundaries (LoopPartition), each part a plain copy, and the result is still the concatenation (with the
    selects DenseNet-121 spent 55 of 125 ms in them: 1.68x onnxruntime, 1.07x split)."""
    import tvm
    from tvm import s_tir, te, tirx, topi

    from neocompile.cpu.fallback import schedule_fallback

    sizes = [16, 8, 24]
    xs = [te.placeholder((1, 5, 3, c), name=f"x{i}") for i, c in enumerate(sizes)]
    out = topi.nn.relu(topi.multiply(topi.concatenate(xs, axis=3), 1.5))
    sch = s_tir.Schedule(te.create_prim_func([*xs, out]))
    assert schedule_fallback(sch, 8) == 1
    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})
    lowering = [s_tir.transform.LowerInitBlock(), s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
                s_tir.transform.ConvertBlocksToOpaque(), s_tir.transform.CompactBufferAllocation(),
                s_tir.transform.LowerOpaqueBlock(), tirx.transform.FlattenBuffer(), tirx.transform.NarrowDataType(32),
                s_tir.transform.LoopPartition(), tirx.transform.StmtSimplify()]
    func = sch.mod["main"].with_attr("global_symbol", "main")
    with target:
        text = tvm.transform.Sequential(lowering)(tvm.IRModule({"main": func})).script()
    assert "if_then_else" not in text, text
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, 5, 3, c)).astype("float32") for c in sizes]
    got = tvm.runtime.empty((1, 5, 3, sum(sizes)), "float32")
    tvm.tirx.build(tvm.IRModule({"main": func}), target=target)["main"](*map(tvm.runtime.tensor, arrays), got)
    np.testing.assert_array_equal(got.numpy(), np.maximum(np.concatenate(arrays, axis=3) * 1.5, 0))


@pytest.mark.parametrize("rate, size, kernel, padding", [
    (24, 16, (1, 1), [0, 0, 0, 0]),  # every outer tap reads padding only: the center tap alone
    (12, 16, (3, 3), [12, 12, 12, 12]),  # each outer tap reads the map for some outputs: unchanged
    (6, (4, 16), (1, 3), [0, 6, 0, 6]),  # dead along the 4-row height only
])
def test_dilated_conv_taps_that_read_only_padding_are_cut(rate, size, kernel, padding):
    """A dilated conv's taps that read padding for every output position only ever add zeros: cut, with the padding
    reduced to keep the output's size and values (DeepLabV3's ASPP at rates 24 and 36 over a 16x16 map)."""
    from tvm import relax

    from neocompile.cpu.rewrites import dead_taps

    height, width = (size, size) if isinstance(size, int) else size
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, height, width, 4), "float32"))
    weight = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype("float32")
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, relax.const(weight), padding=rate, dilation=rate,
                                                    data_layout="NHWC", out_layout="NHWC"))
        bb.emit_func_output(out)
    mod = dead_taps(bb.get())
    conv = next(b.value for b in mod["main"].body.blocks[0].bindings if getattr(b.value.op, "name", "") == "relax.nn.conv2d")
    assert tuple(int(d) for d in conv.args[1].ty.shape.values[2:]) == kernel
    assert [int(p) for p in conv.attrs.padding] == padding
    assert [int(d) for d in conv.ty.shape.values] == [1, height, width, 8]  # the same output shape

