"""Packages load and run on their devices' kind of OS: inside real Debian 11 root filesystems (debootstrap,
cached), with that OS's own loader and glibc, under qemu-user for ARM; and every file stays within the device's
glibc/libstdc++ floors.

Real parts only: without debootstrap, root or the Debian mirror these tests fail with the reason.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from neocompile.device import elf, floors, images, runner
from neocompile.errors import CompilationError, PackageError
from neocompile.runtime import Model
from neocompile.targets import all_targets, get_target
from tests.models import SMALL_SHAPE

DEVICES = sorted(all_targets())


def _run_in_image(root: Path, target, package: Path, x: np.ndarray | None, tmp_path: Path) -> subprocess.CompletedProcess:
    io = None
    if x is not None:
        io = tmp_path / "io"
        io.mkdir(exist_ok=True)
        runner.write_inputs(io, [x])
    cmd = images.run_command(root, target, package, io)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", DEVICES)
def test_every_file_of_every_package_is_within_the_devices_floors(name, packages):
    target = get_target(name)
    folder, meta = packages(name)
    req = meta["Requirements"]
    measured = floors.package_floors(folder)
    # Every ELF file is accounted for: the model, each runtime library and the runner.
    elves = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and elf.is_elf(p)}
    assert {"compiled.so", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so", "bin/neo_run"} <= elves
    assert set(req["FileFloors"]) == elves and req["FileFloors"] == measured["Files"]
    assert req["MinGlibc"] == f"GLIBC_{measured['GLIBC']}"
    assert elf.version_key(measured["GLIBC"]) <= elf.version_key(target.glibc_floor), measured["Files"]
    assert measured["GLIBCXX"] is None or elf.version_key(measured["GLIBCXX"]) <= elf.version_key(target.glibcxx_floor)
    assert req["ReferenceOS"] == {"Name": target.os["reference"], "Glibc": target.glibc_floor, "Glibcxx": target.glibcxx_floor}


@pytest.mark.parametrize("name", [n for n in DEVICES if get_target(n).accelerator is None])
def test_cpu_packages_load_and_run_inside_their_device_class_image(name, packages, image_roots, archive, tmp_path):
    import onnxruntime as ort

    from neocompile import modelzoo

    target = get_target(name)
    root = image_roots(target.os["test_image"])
    folder, meta = packages(name)
    info = images.image_info(root)
    assert elf.version_key(info["glibc"]) >= elf.version_key(meta["Requirements"]["MinGlibc"][6:])
    # Loading needs nothing from the CPU beyond the baseline: every package must load in its image.
    proc = _run_in_image(root, target, folder, None, tmp_path)
    assert proc.returncode == 0 and "loaded" in proc.stdout, f"{name} in {root.name}: {proc.stderr}"
    ok, why = runner.can_emulate(target)
    if not ok:  # e.g. AVX-512 code on a CPU without it: qemu-user cannot execute it either
        assert "CPU features" in why, why
        return
    x = np.random.default_rng(5).standard_normal(SMALL_SHAPE).astype(np.float32)
    proc = _run_in_image(root, target, folder, x, tmp_path)
    assert proc.returncode == 0, f"{name} in {root.name}: {proc.stderr}"
    got = runner.read_outputs(tmp_path / "io")
    want = ort.InferenceSession(modelzoo.small_cnn(size=32).SerializeToString()).run(None, {"data": x})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["rasp3b", "rk3399", "lambda"])
def test_neo_run_refuses_an_older_glibc_naming_both_versions(name, packages, image_roots, tmp_path):
    import shutil

    target = get_target(name)
    root = image_roots(target.os["test_image"])
    folder = tmp_path / "pkg"
    shutil.copytree(packages(name)[0], folder)
    meta = json.loads((folder / "compiled.meta").read_text())
    meta["Requirements"]["MinGlibc"] = "GLIBC_9.99"
    (folder / "compiled.meta").write_text(json.dumps(meta))
    proc = _run_in_image(root, target, folder, np.zeros(SMALL_SHAPE, np.float32), tmp_path)
    assert proc.returncode != 0
    assert "needs glibc 9.99" in proc.stderr and f"has glibc {images.image_info(root)['glibc']}" in proc.stderr, proc.stderr


def test_model_refuses_an_older_glibc_naming_both_versions(packages, tmp_path):
    import shutil

    host = [n for n in DEVICES if get_target(n).accelerator is None and get_target(n).host_is_native()][0]
    folder = tmp_path / "pkg"
    shutil.copytree(packages(host)[0], folder)
    Model(folder)  # loads as built
    meta = json.loads((folder / "compiled.meta").read_text())
    meta["Requirements"]["MinGlibc"] = "GLIBC_9.99"
    (folder / "compiled.meta").write_text(json.dumps(meta))
    with pytest.raises(PackageError, match=rf"needs glibc 9\.99 .* this system has glibc {floors.system_glibc()}"):
        Model(folder)


def test_the_image_uses_its_own_glibc_not_the_build_machines(image_roots, tmp_path):
    """A program linked against this machine's glibc (2.36) must not run in the bullseye image (2.31): proof
    that the image runs see the image's libraries only, and that the floor check catches such a file."""
    target = get_target("lambda")
    root = image_roots(target.os["test_image"])
    folder = tmp_path / "pkg"
    (folder / "bin").mkdir(parents=True)
    (folder / "lib").mkdir()
    src = tmp_path / "new.c"
    # A symbol that only exists from glibc 2.34 on.
    src.write_text('#include <pthread.h>\n#include <stdio.h>\nint main(){pthread_attr_t a; cpu_set_t s;'
                   ' pthread_attr_init(&a); pthread_attr_getaffinity_np(&a, sizeof s, &s); puts("ran"); return 0;}\n')
    subprocess.run(["gcc", "-D_GNU_SOURCE", str(src), "-o", str(folder / "bin" / "neo_run")], check=True)
    needs = elf.read(folder / "bin" / "neo_run").newest("GLIBC")
    assert elf.version_key(needs) > elf.version_key(images.image_info(root)["glibc"]), needs
    proc = _run_in_image(root, target, folder, np.zeros((1,), np.float32), tmp_path)
    assert proc.returncode != 0 and f"GLIBC_{needs}' not found" in proc.stderr, proc.stderr
    with pytest.raises(CompilationError, match=rf"would not load on its reference OS Amazon Linux 2.*bin/neo_run needs GLIBC_{needs}"):
        floors.check(floors.package_floors(folder), target)


def test_the_debian_mirror_is_the_one_apt_uses():
    mirror = images.debian_mirror()
    assert mirror.startswith(("http://", "https://", "file:/")) and "security" not in mirror
