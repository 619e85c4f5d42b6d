"""Device-class OS images: real Debian root filesystems per architecture, to run packages against.

Running a package's ``bin/neo_run`` with a device OS's own dynamic loader, glibc and libraries (not the build
machine's) proves the package loads on that OS. Each device names its test image in ``targets/*.json``
(``os.test_image``: Debian 11 "bullseye", glibc 2.31, for armhf, arm64 and amd64). Images are unpacked with
``debootstrap --foreign --variant=minbase`` from the Debian mirror this machine's apt already uses (no second
stage: only the files are needed), once, then cached under ``$NEOCOMPILE_CACHE/images/``. ARM images run under
qemu-user with ``-L <root>``; an image of the host's own architecture runs through the image's own loader.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..errors import NeoError
from .runner import emulator_prefix
from .tvm_runtime import cache_root, host_arch, locked, staging

STAMP = ".neocompile-image.json"


class ImageUnavailable(NeoError):
    """A device OS image cannot be built or used here (no debootstrap, no root, no mirror)."""

    category = "ImageUnavailable"


def debian_mirror() -> str:
    """The Debian archive apt already uses here (``$NEOCOMPILE_DEBIAN_MIRROR`` overrides)."""
    env = os.environ.get("NEOCOMPILE_DEBIAN_MIRROR")
    if env:
        return env
    candidates: list[tuple[str, list[str]]] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for para in path.read_text(errors="replace").split("\n\n"):
            fields = {}
            for line in para.splitlines():
                if line.strip().startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []) and fields.get("uris"):
                candidates += [(uri, fields.get("suites", [])) for uri in fields["uris"]]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                parts = re.sub(r"\[[^\]]*\]", "", line).split()
                if len(parts) >= 3 and parts[0] == "deb":
                    candidates.append((parts[1], [parts[2]]))
    for uri, suites in candidates:
        # The main archive: not the security archive, not a backports/updates-only entry.
        if "security" not in uri and any("-" not in s for s in suites):
            return uri.rstrip("/")
    raise ImageUnavailable(
        "No Debian mirror found in /etc/apt/sources.list(.d) to build a device OS image from; "
        "set NEOCOMPILE_DEBIAN_MIRROR to the archive's URL"
    )


def image_dir(image: dict[str, Any]) -> Path:
    return cache_root() / "images" / f"{image['distribution']}-{image['suite']}-{image['arch']}"


def ensure_image(image: dict[str, Any]) -> Path:
    """The root filesystem of ``image`` (``{"distribution": "debian", "suite", "arch"}``), built once and cached."""
    final = image_dir(image)
    if (final / STAMP).is_file():
        return final
    if image.get("distribution") != "debian":
        raise ImageUnavailable(f"Test image {image}: only Debian images can be built here (debootstrap)")
    tool = shutil.which("debootstrap") or next((p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if Path(p).exists()), None)
    if tool is None:
        raise ImageUnavailable("Building device OS images needs debootstrap (Debian package debootstrap; make deps installs it)")
    if os.geteuid() != 0:
        raise ImageUnavailable("Building device OS images with debootstrap needs root")
    mirror = debian_mirror()
    with locked(final):
        if (final / STAMP).is_file():
            return final
        with staging(final) as tmp:
            cmd = [tool, "--foreign", "--variant=minbase", f"--arch={image['arch']}", image["suite"], str(tmp), mirror]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            except subprocess.TimeoutExpired as exc:
                raise ImageUnavailable(f"debootstrap of {final.name} did not finish in 30 minutes") from exc
            if proc.returncode != 0:
                log = tmp / "debootstrap" / "debootstrap.log"
                tail = (log.read_text(errors="replace") if log.is_file() else proc.stderr or proc.stdout)[-1500:]
                raise ImageUnavailable(f"debootstrap of {final.name} failed ({' '.join(cmd)}): {tail}")
            info = dict(image, glibc=image_glibc(tmp), mirror=mirror)
            (tmp / STAMP).write_text(json.dumps(info, indent=2) + "\n")
    return final


def _multiarch_libdir(root: Path) -> Path:
    for pattern in ("lib/*-linux-gnu*/libc.so.6", "usr/lib/*-linux-gnu*/libc.so.6"):
        found = sorted(root.glob(pattern))
        if found:
            return found[0].parent
    raise ImageUnavailable(f"{root} holds no glibc (lib/*-linux-gnu*/libc.so.6)")


def image_glibc(root: Path) -> str:
    """The glibc version inside an image, read from its libc.so.6 (``"2.31"``)."""
    libc = (_multiarch_libdir(root) / "libc.so.6").resolve()
    match = re.search(rb"release version (\d+\.\d+)", libc.read_bytes())
    if not match:
        raise ImageUnavailable(f"Cannot tell the glibc version of {libc}")
    return match.group(1).decode()


def image_info(root: Path) -> dict[str, Any]:
    return json.loads((root / STAMP).read_text())


def run_command(root: Path, target: Any, package_dir: Path, io_dir: Path | None) -> list[str]:
    """The command that runs ``package_dir``'s ``bin/neo_run`` inside the image at ``root``: with the image's own
    loader and libraries, never the build machine's. Without ``io_dir`` it only loads the package
    (``neo_run --load-only``): for code this CPU cannot execute (AVX-512 on a host without it)."""
    package_dir = Path(package_dir).resolve()
    exe, libs, model = package_dir / "bin" / "neo_run", package_dir / "lib", package_dir / "compiled.so"
    args = ["--load-only", str(model)] if io_dir is None else [str(model), str(io_dir)]
    if target.arch == host_arch():
        libdir = _multiarch_libdir(root)
        loaders = sorted(libdir.glob("ld-linux*.so.*"))
        if not loaders:
            raise ImageUnavailable(f"{libdir} has no dynamic loader")
        usr = root / "usr" / "lib" / libdir.name
        return [str(loaders[0].resolve()), "--inhibit-cache", "--library-path", f"{libs}:{libdir}:{usr}", str(exe), *args]
    return [*emulator_prefix(target, sysroot=str(root)), "-E", f"LD_LIBRARY_PATH={libs}", str(exe), *args]
