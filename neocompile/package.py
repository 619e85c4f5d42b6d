"""Assemble the output package: ``<stem>-<target>.tar.gz`` with the library, ``compiled.meta`` and friends."""
from __future__ import annotations

import datetime as _dt
import gzip
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

from .digest import blake2b_file
from .runtime import LIBRARY, META

REPORT = "verification.json"


def package_name(model_uri: str, label: str) -> str:
    """Neo's naming: ``<input tarball stem>-<target>.tar.gz`` (``model.tar.gz`` -> ``model-ml_c5.tar.gz``)."""
    base = model_uri.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".tar.gz", ".tgz", ".gz", ".tar"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    return f"{base or 'model'}-{label}.tar.gz"


def write_meta(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write compiled.meta with a BLAKE2 digest of every other file in the package folder; return what was written."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel != META:
            files[rel] = {"blake2b": blake2b_file(path), "bytes": path.stat().st_size}
    meta = dict(meta, Files=files)
    (folder / META).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return meta


# Facts of one run, not of the build: kept out of the package so that equal builds have equal bytes.
PER_RUN_REPORT_FIELDS = ("seconds",)


def write_report(folder: Path, report: dict[str, Any]) -> None:
    """Write verification.json: the report without its per-run fields (PER_RUN_REPORT_FIELDS)."""
    kept = {k: v for k, v in report.items() if k not in PER_RUN_REPORT_FIELDS}
    (folder / REPORT).write_text(json.dumps(kept, indent=2) + "\n")


def add_runtime(folder: Path, runtime_dir: Path | None, driver: Path | None) -> list[str]:
    """Copy the runtime into the package: the TVM runtime libraries and the C API (``lib/``), the runner
    (``bin/neo_run``), the C API's header (``include/neocompile_rt.h``) and its Python binding
    (``python/neocompile_rt.py``, numpy only)."""
    from .device.runner import RT_HEADER, RT_LIBRARY, RT_PYTHON

    added = []
    if runtime_dir is not None:
        (folder / "lib").mkdir(exist_ok=True)
        for lib in sorted(Path(runtime_dir).glob("*.so*")):
            shutil.copy2(lib, folder / "lib" / lib.name)
            added.append(f"lib/{lib.name}")
        if (folder / "lib" / RT_LIBRARY).is_file():
            for sub, source in (("include", RT_HEADER), ("python", RT_PYTHON)):
                (folder / sub).mkdir(exist_ok=True)
                shutil.copy2(source, folder / sub / source.name)
                added.append(f"{sub}/{source.name}")
    if driver is not None:
        (folder / "bin").mkdir(exist_ok=True)
        shutil.copy2(driver, folder / "bin" / "neo_run")
        added.append("bin/neo_run")
    return added


def make_tarball(folder: Path, out_path: Path) -> Path:
    """A reproducible tar.gz of ``folder`` (sorted members, zeroed owners and times), streamed file by file.

    gzip level 1: weights are near-random floats (level 6 saves 0.3% of compiled.params in twice the time)."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with open(out_path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(folder.rglob("*")):
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False, filter=normalise)
    return out_path


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


__all__ = ["LIBRARY", "META", "REPORT", "add_runtime", "make_tarball", "package_name", "write_meta", "write_report", "now_iso"]
