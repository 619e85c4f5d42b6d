"""What importing neocompile and TVM costs a process: tvm_ffi's eager torch import is kept out."""
import subprocess
import sys


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_tvm_is_imported_without_torch():
    out = _python("import sys, neocompile, tvm\nfrom tvm import relax\nprint('torch' in sys.modules)")
    assert out == "False"


def test_torch_still_imports_afterwards_and_exchanges_tensors_with_tvm():
    code = ("import neocompile, tvm\nfrom tvm import relax\nimport torch, numpy as np\n"
            "t = torch.arange(6, dtype=torch.float32)\n"
            "print(tvm.runtime.from_dlpack(t).numpy().tolist())")
    assert _python(code) == str([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])


def test_a_process_that_imported_torch_first_keeps_tvms_torch_interop():
    code = ("import torch\nimport sys, neocompile, tvm\nfrom tvm import relax\n"
            "import tvm_ffi._convert as c\nprint(c.torch is not None)")
    assert _python(code) == "True"
