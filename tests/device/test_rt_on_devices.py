"""Every CPU device's package runs through its own Python binding (python/neocompile_rt.py, numpy only) inside
the device's OS image: the image's Python and the distribution's numpy, under qemu-user for ARM, nothing from the
build machine but the package itself. Outputs are compared with the framework's."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from neocompile.device import images, runner
from neocompile.targets import all_targets, get_target
from tests.models import SMALL_SHAPE

CPU_DEVICES = sorted(n for n, t in all_targets().items() if t.accelerator is None and t.device_type == "cpu")

SCRIPT = r"""
import json, sys
import numpy as np
from neocompile_rt import Model, PackageError
try:
    model = Model()  # the package this module sits in
except PackageError as exc:
    print(json.dumps({"refused": str(exc)}))
    sys.exit(0)
x = ((np.arange(int(np.prod(model.input_shapes["data"]))) % 7) * 0.25 - 0.5).astype("float32")
out = model.run({"data": x.reshape(model.input_shapes["data"])})
print(json.dumps({"names": model.output_names, "dtype": str(out[0].dtype), "shape": list(out[0].shape),
                  "values": out[0].ravel().tolist(), "numpy": np.__version__, "modules": sorted(sys.modules)}))
"""


def test_the_cpu_devices_cover_the_three_architectures_and_the_rest_have_accelerators():
    assert {get_target(n).arch for n in CPU_DEVICES} == {"x86_64", "aarch64", "armv7"}
    assert all(t.accelerator is not None for n, t in all_targets().items() if n not in CPU_DEVICES)


@pytest.mark.parametrize("name", CPU_DEVICES)
def test_the_package_runs_through_its_python_binding_on_the_devices_os(name, packages, python_roots):
    import onnxruntime as ort

    from neocompile import modelzoo

    target = get_target(name)
    folder, meta = packages(name)
    root = python_roots(name)
    cmd = images.python_command(root, target, ["-c", SCRIPT], env={"PYTHONPATH": str(folder / "python")})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    ok, why = runner.can_emulate(target, fetch=False)
    if not ok and "CPU features" in why:  # AVX-512 code on this AVX2 host: the binding refuses it, naming them
        assert "needs CPU features" in got["refused"] and "avx512" in got["refused"], got
        return
    assert "refused" not in got, got
    assert got["numpy"] == images.image_info(root)["numpy"]  # the distribution's numpy, not the build machine's
    assert not {"tvm", "tvm_ffi", "neocompile"} & set(got["modules"])
    assert (got["names"], got["dtype"], got["shape"]) == (["prob"], "float32", [1, 10])
    x = ((np.arange(int(np.prod(SMALL_SHAPE))) % 7) * 0.25 - 0.5).astype(np.float32).reshape(SMALL_SHAPE)
    want = ort.InferenceSession(modelzoo.small_cnn(size=32).SerializeToString()).run(None, {"data": x})[0].ravel()
    np.testing.assert_allclose(np.array(got["values"], np.float32), want, rtol=1e-4, atol=1e-5)
