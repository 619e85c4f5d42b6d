"""Device-class OS images: real Debian root filesystems per architecture, to run packages against.

Running a package's ``bin/neo_run`` with a device OS's own dynamic loader, glibc and libraries (not the build
machine's) proves the package loads on that OS. Each device names its test image in ``targets/*.json``
(``os.test_image``: Debian 11 "bullseye", glibc 2.31, for armhf, arm64 and amd64). Images are unpacked with
``debootstrap --foreign --variant=minbase`` from the Debian mirror this machine's apt already uses (no second
stage: only the files are needed), once, then cached under ``$NEOCOMPILE_CACHE/images/``. ARM images run under
qemu-user with ``-L <root>``; an image of the host's own architecture runs through the image's own loader.

Python images (:func:`ensure_python_image`) add the distribution's own ``python3`` and ``python3-numpy`` to such a
root filesystem, to test on-device Python code with a Python and numpy of the device's architecture;
:func:`python_command` runs that Python inside the image.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
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
    tool = _debootstrap_tool(image)
    mirror = debian_mirror()
    with locked(final):
        if (final / STAMP).is_file():
            return final
        with staging(final) as tmp:
            _debootstrap(tool, image, tmp, mirror, final.name)
            info = dict(image, glibc=image_glibc(tmp), mirror=mirror)
            (tmp / STAMP).write_text(json.dumps(info, indent=2) + "\n")
    return final


def _debootstrap_tool(image: dict[str, Any]) -> str:
    """The debootstrap executable, after checking that ``image`` can be built here at all."""
    if image.get("distribution") != "debian":
        raise ImageUnavailable(f"Test image {image}: only Debian images can be built here (debootstrap)")
    tool = shutil.which("debootstrap") or next((p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if Path(p).exists()), None)
    if tool is None:
        raise ImageUnavailable("Building device OS images needs debootstrap (Debian package debootstrap; make deps installs it)")
    if os.geteuid() != 0:
        raise ImageUnavailable("Building device OS images with debootstrap needs root")
    return tool


def _debootstrap(tool: str, image: dict[str, Any], tmp: Path, mirror: str, name: str, include: tuple[str, ...] = ()) -> None:
    """First stage of debootstrap into ``tmp``: the required packages unpacked, ``include`` (and the rest of the
    dependency closure) only downloaded into ``var/cache/apt/archives``."""
    extra = [f"--include={','.join(include)}"] if include else []
    cmd = [tool, "--foreign", "--variant=minbase", *extra, f"--arch={image['arch']}", image["suite"], str(tmp), mirror]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ImageUnavailable(f"debootstrap of {name} did not finish in 30 minutes") from exc
    if proc.returncode != 0:
        log = tmp / "debootstrap" / "debootstrap.log"
        tail = (log.read_text(errors="replace") if log.is_file() else proc.stderr or proc.stdout)[-1500:]
        raise ImageUnavailable(f"debootstrap of {name} failed ({' '.join(cmd)}): {tail}")


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
        usr = root / "usr" / "lib" / libdir.name
        return [str(_image_loader(root)), "--inhibit-cache", "--library-path", f"{libs}:{libdir}:{usr}", str(exe), *args]
    return [*emulator_prefix(target, sysroot=str(root)), "-E", f"LD_LIBRARY_PATH={libs}", str(exe), *args]


def _image_loader(root: Path) -> Path:
    """The image's own dynamic loader (``ld-linux*.so.*`` in its multiarch folder), as a real file."""
    libdir = _multiarch_libdir(root)
    loaders = sorted(libdir.glob("ld-linux*.so.*"))
    if not loaders:
        raise ImageUnavailable(f"{libdir} has no dynamic loader")
    return resolve_in_image(root, "/" + loaders[0].relative_to(root).as_posix())


def resolve_in_image(root: Path, path: str) -> Path:
    """``path`` as the device sees it, as a file under ``root``: symlinks are followed the way they would be on
    the device, so an absolute link target (``/usr/bin/python3.9``, ``/lib/x86_64-linux-gnu/ld-2.31.so``) is
    taken inside ``root``, never on the build machine (which ``Path.resolve`` would do)."""
    root = Path(root)
    todo = list(PurePosixPath("/", path).parts[1:])
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, part)
        if here.is_symlink():
            hops += 1
            if hops > 40:
                raise ImageUnavailable(f"Too many levels of symbolic links resolving {path} in {root}")
            link = PurePosixPath(os.readlink(here))
            if link.is_absolute():
                done = []
            todo = [*link.parts[1 if link.is_absolute() else 0:], *todo]
            continue
        done.append(part)
    return root.joinpath(*done)


# ---------------------------------------------------------------------------------------------------------------
# Python images: the distribution's own python3 and numpy inside a device image, for on-device Python code.
# ---------------------------------------------------------------------------------------------------------------

#: What a Python image holds on top of minbase (the rest of their dependency closure comes with them).
PYTHON_PACKAGES = ("python3", "python3-numpy")

#: Debian architecture -> registry architecture (``Target.arch``).
_DEBIAN_ARCHES = {"amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7"}


def python_image_dir(image: dict[str, Any]) -> Path:
    """A folder of its own beside the plain image, so that image and its cache key stay as they are."""
    return image_dir(image).with_name(image_dir(image).name + "-python")


def ensure_python_image(image: dict[str, Any]) -> Path:
    """The root filesystem of ``image`` plus the distribution's ``python3`` and ``python3-numpy`` (and their
    dependencies: libpython3.X-stdlib, libblas3, liblapack3, libgfortran5, ...), built once and cached.

    ``debootstrap --foreign --include=python3,python3-numpy`` resolves and downloads the dependency closure but its
    first stage only unpacks the required set, so every downloaded .deb is then unpacked by hand (``dpkg-deb
    --fsys-tarfile | tar --keep-directory-symlink``: ``dpkg-deb -x`` would replace the image's merged-/usr links
    ``/bin``, ``/lib``, ``/sbin`` by real folders). No maintainer script runs; the one thing they do that a
    program needs, the ``update-alternatives`` links (numpy loads ``libblas.so.3`` and ``liblapack.so.3`` only
    through them), is redone from the packages' postinst lines. The standard library and numpy are then compiled
    to bytecode by the image's own Python (as Debian's postinst would; it makes ``import numpy`` under qemu about
    three times faster) and checked to import. The stamp records the Python and numpy versions.
    """
    final = python_image_dir(image)
    if (final / STAMP).is_file():
        return final
    tool = _debootstrap_tool(image)
    if shutil.which("tar") is None or shutil.which("dpkg-deb") is None:
        raise ImageUnavailable("Building a Python device image needs tar and dpkg-deb (Debian packages tar, dpkg)")
    target = _image_target(image)
    mirror = debian_mirror()
    with locked(final):
        if (final / STAMP).is_file():
            return final
        with staging(final) as tmp:
            _debootstrap(tool, image, tmp, mirror, final.name, include=PYTHON_PACKAGES)
            debs = sorted((tmp / "var" / "cache" / "apt" / "archives").glob("*.deb"))
            if not debs:
                raise ImageUnavailable(f"debootstrap of {final.name} left no packages in var/cache/apt/archives")
            versions = {}
            for deb in debs:
                versions.update(_unpack_deb(deb, tmp))
            missing = [p for p in PYTHON_PACKAGES if p not in versions]
            if missing:
                raise ImageUnavailable(f"debootstrap of {final.name} did not fetch {', '.join(missing)}")
            _redo_alternatives(tmp, debs)
            for deb in debs:  # unpacked: keep the image ~45 MB smaller
                deb.unlink()
            python = _image_python(tmp)
            _compile_bytecode(tmp, target, python, final.name)
            numpy = _check_python(tmp, target, final.name)
            info = dict(image, glibc=image_glibc(tmp), mirror=mirror, packages=list(PYTHON_PACKAGES),
                        python=numpy["python"], numpy=numpy["numpy"], python_executable="/" + python.relative_to(tmp).as_posix(),
                        debs=dict(sorted(versions.items())))
            (tmp / STAMP).write_text(json.dumps(info, indent=2) + "\n")
    return final


def _image_target(image: dict[str, Any]) -> Any:
    """A registry device of ``image``'s architecture: how to run the image's programs (emulator, cpu) at build time."""
    from ..targets import all_targets

    arch = _DEBIAN_ARCHES.get(image.get("arch", ""))
    found = sorted((t for t in all_targets().values() if t.arch == arch and (arch == host_arch() or t.emulator)),
                   key=lambda t: (t.os.get("test_image") != image, t.name))
    if not found:
        raise ImageUnavailable(f"No registry device has the architecture of test image {image}: nothing says how to run it")
    return found[0]


def _unpack_deb(deb: Path, root: Path) -> dict[str, str]:
    """Unpack ``deb``'s files into ``root`` (merged-/usr links kept); ``{package: version}``."""
    fields = subprocess.run(["dpkg-deb", "--show", "--showformat=${Package}\\t${Version}", str(deb)],
                            capture_output=True, text=True, check=False)
    if fields.returncode != 0:
        raise ImageUnavailable(f"Cannot read {deb.name}: {fields.stderr.strip()}")
    package, _, version = fields.stdout.partition("\t")
    data = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "--keep-directory-symlink", "-f", "-", "-C", str(root)], stdin=data.stdout,
                           capture_output=True, text=True, check=False)
    data.stdout.close()
    err = data.stderr.read().decode(errors="replace")
    if data.wait() != 0 or untar.returncode != 0:
        raise ImageUnavailable(f"Unpacking {deb.name} into {root} failed: {err.strip()} {untar.stderr.strip()}")
    return {package: version}


def _redo_alternatives(root: Path, debs: list[Path]) -> None:
    """The links ``update-alternatives --install LINK NAME PATH PRIORITY`` lines in the packages' postinst would
    make (the highest priority per link), as relative links straight to ``PATH`` (no ``/etc/alternatives``)."""
    best: dict[str, tuple[int, str]] = {}
    for deb in debs:
        proc = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=False)
        if proc.returncode != 0:
            raise ImageUnavailable(f"Cannot read the control files of {deb.name}: {proc.stderr.decode(errors='replace')}")
        script = _tar_member(proc.stdout, "postinst")
        if not script:
            continue
        joined = re.sub(r"\\\n\s*", " ", script)
        for m in re.finditer(r"update-alternatives\s+--install\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)", joined):
            link, _, path, prio = m.groups()
            if "$" in link + path or not link.startswith("/") or not path.startswith("/"):
                continue  # computed in shell: not needed by anything we run
            if link not in best or int(prio) > best[link][0]:
                best[link] = (int(prio), path)
    for link, (_, path) in sorted(best.items()):
        dest = resolve_in_image(root, str(PurePosixPath(path).parent)) / PurePosixPath(path).name
        parent = resolve_in_image(root, str(PurePosixPath(link).parent))
        where = parent / PurePosixPath(link).name
        if not dest.exists() or not parent.is_dir() or where.exists() or where.is_symlink():
            continue
        os.symlink(os.path.relpath(dest, parent), where)


def _tar_member(data: bytes, name: str) -> str | None:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.lstrip("./") == name:
                return tar.extractfile(member).read().decode(errors="replace")
    return None


def _image_python(root: Path) -> Path:
    """The image's ``/usr/bin/python3`` followed to the real interpreter file (``/usr/bin/python3.9``)."""
    python = resolve_in_image(root, "/usr/bin/python3")
    if not python.is_file() or not re.fullmatch(r"python3\.\d+", python.name):
        raise ImageUnavailable(f"{root} holds no Python interpreter /usr/bin/python3 -> python3.X "
                               "(a Python image comes from ensure_python_image)")
    return python


def _run_in_image(cmd: list[str], what: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ImageUnavailable(f"{what} did not finish in {timeout} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise ImageUnavailable(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{(proc.stderr or proc.stdout)[-2000:]}")
    return proc


def _compile_bytecode(root: Path, target: Any, python: Path, name: str) -> None:
    lib = python.parent.parent / "lib"
    dirs = [str(lib / python.name), str(lib / "python3" / "dist-packages")]
    # Single process: compileall's worker pool needs POSIX semaphores, which fail under qemu-user here.
    cmd = python_command(root, target, ["-m", "compileall", "-q", *dirs], env={"PYTHONDONTWRITEBYTECODE": ""})
    _run_in_image(cmd, f"Compiling the Python bytecode of {name}")


def _check_python(root: Path, target: Any, name: str) -> dict[str, str]:
    code = "import json, platform, numpy; print(json.dumps({'python': platform.python_version(), 'numpy': numpy.__version__}))"
    proc = _run_in_image(python_command(root, target, ["-c", code]), f"Importing numpy in {name}", timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def python_command(root: Path, target: Any, argv: list[str], env: dict[str, str] | None = None,
                   library_path: list[str] | None = None) -> list[str]:
    """The command that runs the Python of the image at ``root`` (from :func:`ensure_python_image`) with ``argv``
    for ``target``: the image's own interpreter file, loader, glibc, standard library and numpy; nothing from the
    build machine's Python or libraries.

    ARM targets run under qemu-user (``emulator_prefix(target, sysroot=root)``, so ``-L <root>``) with the guest's
    variables given by ``-E``; the host's own architecture runs through the image's loader
    (``ld-linux*.so --inhibit-cache --library-path <image libdirs>``). The whole command starts with ``env -i``: the
    guest sees only the variables set here, never the caller's ``PYTHONPATH``, ``LD_PRELOAD``, ``QEMU_*`` etc.

    Guest variables: ``PYTHONHOME=<root>/usr`` (so ``sys.prefix`` and ``sys.path`` lie inside the image, which also
    makes every module file name an unambiguous host path under ``root``), ``PYTHONNOUSERSITE=1``,
    ``PYTHONDONTWRITEBYTECODE=1`` (the cached image stays as built), ``LC_ALL=C.UTF-8`` (plus ``LOCPATH`` and ``GCONV_PATH`` into
    the image for the host architecture, whose glibc would otherwise read the build machine's locale files) and
    ``PATH=/usr/bin:/bin``; then ``env`` on top (an empty value removes one). ``library_path`` folders come first in
    the library search path, before ``env``'s ``LD_LIBRARY_PATH`` and the image's own folders.

    Limits: the guest Python cannot start further processes of the image (``subprocess`` of ``sys.executable``,
    ``multiprocessing``' spawn): under qemu-user without binfmt the kernel cannot execute them, and on the host
    architecture they would start with the build machine's loader and glibc.
    """
    root = Path(root)
    python = _image_python(root)
    envs = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONHOME": str(root / "usr"), "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1"}
    native = target.arch == host_arch()
    if native:  # glibc's own data files: the image's, not the build machine's
        envs["LOCPATH"] = str(root / "usr" / "lib" / "locale")
        envs["GCONV_PATH"] = str(_multiarch_libdir(root) / "gconv")
    envs.update(env or {})
    envs = {k: v for k, v in envs.items() if v != ""}
    libs = [str(p) for p in (library_path or [])] + [p for p in envs.pop("LD_LIBRARY_PATH", "").split(":") if p]
    env_tool = shutil.which("env") or "/usr/bin/env"
    if native:
        libdir = _multiarch_libdir(root)
        dirs = list(dict.fromkeys([*libs, str(libdir), str(root / "usr" / "lib" / libdir.name)]))
        return [env_tool, "-i", *(f"{k}={v}" for k, v in envs.items()), str(_image_loader(root)), "--inhibit-cache",
                "--library-path", ":".join(dirs), str(python), *argv]
    prefix = emulator_prefix(target, sysroot=str(root))
    emulator = shutil.which(prefix[0])
    if emulator is None:
        package = (target.emulator or {}).get("package", "qemu-user")
        raise ImageUnavailable(f"Running the {target.arch} Python image needs the emulator '{prefix[0]}' on PATH "
                               f"(Debian package {package}; make deps installs it)")
    if libs:
        envs["LD_LIBRARY_PATH"] = ":".join(libs)
    guest = [arg for k, v in envs.items() for arg in ("-E", f"{k}={v}")]
    return [env_tool, "-i", emulator, *prefix[1:], *guest, str(python), *argv]
