"""Local folders as storage: ``file:///abs/path`` URIs and plain paths.

Every write goes to a hidden temporary file in the destination folder and is renamed into place, so
readers never see a partial file and a failure leaves nothing behind.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

from neocompile.errors import InputConfigurationError, StorageError


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(6)}.tmp"


def _is_temp_of(entry: str, name: str) -> bool:
    return re.fullmatch(rf"\.{re.escape(name)}\.[0-9a-f]{{12}}\.tmp", entry) is not None


def _atomic_copy(src: Path, folder: Path, name: str) -> Path:
    """Copy ``src`` to ``folder/name`` via a temporary sibling; raise OSError, leaving no file."""
    final = folder / name
    tmp = folder / _temp_name(name)
    try:
        # os.open with 0o666 lets the umask decide the final mode, as for any other new file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _ensure_folder(folder: Path, field: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StorageError(
            f"{field} '{folder}' is not a folder (a file is in the way); expected a folder to write to"
        ) from None
    except OSError as exc:
        raise StorageError(
            f"{field} '{folder}' cannot be created: {_reason(exc)}; expected a writable folder"
        ) from None


def fetch(path: str, dest_dir: Path, field: str) -> Path:
    """Copy the local file ``path`` into ``dest_dir`` and return the copy's path."""
    src = Path(path)
    if src.is_dir():
        raise InputConfigurationError(
            f"{field} '{src}' is a folder; expected a model archive file (.tar.gz)"
        )
    if not src.exists():
        raise InputConfigurationError(
            f"{field} '{src}': local file does not exist; expected a model archive file (.tar.gz)"
        )
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        return _atomic_copy(src, dest_dir, src.name)
    except OSError as exc:
        raise StorageError(
            f"{field} '{src}' could not be copied into {dest_dir}: {_reason(exc)}"
        ) from None


def put(local_file: Path, folder: str, name: str, field: str) -> str:
    """Store ``local_file`` as ``folder/name`` atomically and return that path."""
    target = Path(folder)
    _ensure_folder(target, field)
    try:
        return str(_atomic_copy(local_file, target, name))
    except OSError as exc:
        # Name the source if reading it failed, else the destination (not our temporary file).
        where = local_file if exc.filename == str(local_file) else target / name
        raise StorageError(
            f"{field} '{target}': writing {name} failed: {where}: {_reason(exc)}; "
            "expected a writable folder"
        ) from None


def check_writable(folder: str, field: str) -> None:
    """Create ``folder`` if needed and prove a file can be created in it."""
    target = Path(folder)
    _ensure_folder(target, field)
    probe = target / f".neocompile-probe-{secrets.token_hex(6)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise StorageError(
            f"{field} '{target}' is not writable: {_reason(exc)}; expected a writable folder"
        ) from None
    finally:
        probe.unlink(missing_ok=True)


def discard_partial(folder: str, name: str, field: str) -> None:
    """Delete temporary files a killed ``put`` of ``name`` left in ``folder``."""
    target = Path(folder)
    try:
        entries = os.listdir(target)
    except OSError:
        return
    for entry in entries:
        if _is_temp_of(entry, name):
            (target / entry).unlink(missing_ok=True)
