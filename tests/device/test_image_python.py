"""A Python of the device's architecture, from the device image's own Debian packages (python3, python3-numpy),
runs inside that image: under qemu-user for ARM, through the image's loader on the host's architecture. What it
imports (numpy, the standard library, glibc, BLAS) comes from the image, never from the build machine.

Real parts only: without debootstrap, root, qemu-user or the Debian mirror these tests fail with the reason.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from neocompile.device import images
from neocompile.targets import get_target

#: Device -> (platform.machine() inside its image, pointer size).
DEVICES = {"rasp3b": ("armv7l", 4), "rk3399": ("aarch64", 8), "ml_c4": ("x86_64", 8)}

PROBE = r"""
import ctypes, json, os, platform, sys
import numpy
import neotest_mod
a = numpy.arange(12, dtype=numpy.float64).reshape(3, 4)
b = numpy.linspace(-1.0, 1.0, 20).reshape(4, 5)
maps = sorted({line.split(None, 5)[5].strip() for line in open('/proc/self/maps') if len(line.split(None, 5)) == 6})
print(json.dumps({
    "machine": platform.machine(), "python": platform.python_version(), "numpy": numpy.__version__,
    "libc": os.confstr('CS_GNU_LIBC_VERSION'), "numpy_file": numpy.__file__, "executable": sys.executable,
    "prefix": sys.prefix, "path": sys.path, "strlen": ctypes.CDLL(None).strlen(b"neocompile"),
    "pointer": ctypes.sizeof(ctypes.c_void_p), "extra_lib": ctypes.CDLL("libneotest.so").zlibVersion is not None,
    "matmul": (a @ b).tolist(), "matmul32": (a.astype(numpy.float32) @ b.astype(numpy.float32)).tolist(),
    "module": neotest_mod.VALUE, "maps": [m for m in maps if m.startswith('/')],
}))
"""


def _command(root: Path, target, argv: list[str], **kwargs) -> list[str]:
    try:
        return images.python_command(root, target, argv, **kwargs)
    except images.ImageUnavailable as exc:
        pytest.fail(f"cannot run the Python of {root.name}: {exc}", pytrace=False)


@pytest.mark.parametrize("name", sorted(DEVICES))
def test_the_images_own_python_and_numpy_run_for_the_devices_architecture(name, python_roots, tmp_path, monkeypatch):
    target = get_target(name)
    root = python_roots(name)
    real_root = os.path.realpath(root)
    info = images.image_info(root)
    # The binding's situation: its own module on PYTHONPATH and its own library folder.
    (tmp_path / "py").mkdir()
    (tmp_path / "py" / "neotest_mod.py").write_text("VALUE = 42\n")
    (tmp_path / "lib").mkdir()
    libz = images.resolve_in_image(root, "/" + (images._multiarch_libdir(root) / "libz.so.1").relative_to(root).as_posix())
    shutil.copy(libz, tmp_path / "lib" / "libneotest.so")
    # The caller's environment must not reach the guest.
    monkeypatch.setenv("PYTHONPATH", "/host-leak")
    monkeypatch.setenv("PYTHONHOME", "/host-leak")
    cmd = _command(root, target, ["-c", PROBE], env={"PYTHONPATH": str(tmp_path / "py")},
                   library_path=[str(tmp_path / "lib")])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    machine, pointer = DEVICES[name]
    assert (got["machine"], got["pointer"]) == (machine, pointer)
    assert got["python"] == info["python"] and got["numpy"] == info["numpy"], (got, info)
    assert got["libc"] == f"glibc {info['glibc']}" == "glibc 2.31"
    assert got["libc"] != os.confstr("CS_GNU_LIBC_VERSION")  # the build machine's glibc is newer
    assert got["numpy_file"].startswith(real_root + "/usr/lib/python3/dist-packages/numpy/"), got["numpy_file"]
    assert got["executable"] == str(images.resolve_in_image(root, "/usr/bin/python3"))
    assert got["prefix"] == str(root / "usr")
    assert "/host-leak" not in got["path"]
    assert all(p.startswith(real_root) for p in got["path"] if p and p != str(tmp_path / "py")), got["path"]
    assert got["strlen"] == 10 and got["extra_lib"] and got["module"] == 42
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    b = np.linspace(-1.0, 1.0, 20).reshape(4, 5)
    np.testing.assert_allclose(got["matmul"], a @ b, rtol=1e-12)
    np.testing.assert_allclose(got["matmul32"], (a @ b).astype(np.float32), rtol=1e-5)
    # Every file mapped into the process (interpreter, loader, libc, BLAS, numpy's extensions, locale data) is the
    # image's, or the test's own library copy.
    outside = [m for m in got["maps"] if not m.startswith((real_root + "/", str(tmp_path / "lib") + "/"))]
    assert not outside, outside
    assert any("/blas/libblas.so" in m for m in got["maps"]) and any("libgfortran" in m for m in got["maps"])


@pytest.mark.parametrize("name", sorted(DEVICES))
def test_the_command_runs_the_images_interpreter_file_in_the_image(name, python_roots):
    target = get_target(name)
    root = python_roots(name)
    cmd = _command(root, target, ["-c", "pass"])
    python = str(images.resolve_in_image(root, "/usr/bin/python3"))
    assert Path(python).is_file() and not Path(python).is_symlink() and python.startswith(str(root) + "/usr/bin/python3.")
    assert cmd[1] == "-i" and cmd[-3:] == [python, "-c", "pass"]
    assert "PYTHONNOUSERSITE=1" in cmd and f"PYTHONHOME={root}/usr" in cmd
    if target.arch == "x86_64":
        loader = cmd[cmd.index("--inhibit-cache") - 1]
        assert loader.startswith(str(root) + "/") and "ld-" in Path(loader).name
    else:
        assert cmd[2] == shutil.which(target.emulator["command"]) and cmd[cmd.index("-L") + 1] == str(root)
        assert "-E" in cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr


def test_python_images_record_their_versions_and_leave_the_plain_images_alone(python_roots):
    root = python_roots("rk3399")
    info = images.image_info(root)
    assert info["packages"] == ["python3", "python3-numpy"]
    assert info["python"].startswith("3.9.") and info["numpy"].startswith("1.19.")
    assert root.name == "debian-bullseye-arm64-python"
    assert images.image_dir(get_target("rk3399").os["test_image"]).name == "debian-bullseye-arm64"
    # merged /usr survives the hand unpacking of the packages
    for link, dest in (("bin", "usr/bin"), ("lib", "usr/lib"), ("sbin", "usr/sbin")):
        assert os.readlink(root / link) == dest


def test_symlinks_are_followed_inside_the_image_not_on_the_build_machine(tmp_path):
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "python3.9").write_text("")
    (root / "bin").symlink_to("usr/bin")
    (root / "usr" / "bin" / "python3").symlink_to("/usr/bin/python3.9")  # absolute: the device's /usr
    (root / "usr" / "bin" / "py").symlink_to("../../bin/python3")
    for path in ("/usr/bin/python3", "/bin/python3", "/usr/bin/py"):
        assert images.resolve_in_image(root, path) == root / "usr" / "bin" / "python3.9"
    assert images._image_python(root) == root / "usr" / "bin" / "python3.9"
    with pytest.raises(images.ImageUnavailable, match="no Python interpreter"):
        images._image_python(tmp_path)
