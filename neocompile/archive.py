"""Safe extraction of the user's ``model.tar.gz`` and Neo's per-framework file rules.

The archive is untrusted input: it must be one gzip-compressed tar, and no member may escape the
extraction folder (absolute paths, ``..``, links pointing outside), be a device/FIFO, or make the
unpacked tree exceed the configured size or member count (a tar bomb must not fill the disk).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from .errors import InputConfigurationError

UNTAR_ERROR = "Unable to untar input model. Please confirm the model is a tar.gz file"


@dataclasses.dataclass(frozen=True)
class ArchiveLimits:
    """Upper bounds for an input archive; override with NEOCOMPILE_MAX_UNPACKED_BYTES / _MAX_MEMBERS."""

    max_unpacked_bytes: int = 8 * 1024**3
    max_members: int = 10_000

    @classmethod
    def from_env(cls) -> "ArchiveLimits":
        default = cls()
        return cls(
            max_unpacked_bytes=int(os.environ.get("NEOCOMPILE_MAX_UNPACKED_BYTES", default.max_unpacked_bytes)),
            max_members=int(os.environ.get("NEOCOMPILE_MAX_MEMBERS", default.max_members)),
        )


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def check_member(member: tarfile.TarInfo, root: Path) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (parts and parts[0].endswith(":")):
        raise InputConfigurationError(f"{UNTAR_ERROR}. Archive member '{name}' has an absolute path; expected paths relative to the archive root")
    if ".." in parts:
        raise InputConfigurationError(f"{UNTAR_ERROR}. Archive member '{name}' contains '..'; expected paths inside the archive root")
    if member.isdev() or member.isfifo():
        raise InputConfigurationError(f"{UNTAR_ERROR}. Archive member '{name}' is a device or FIFO; expected regular files, folders and links inside the archive")
    if member.issym() or member.islnk():
        link = member.linkname
        base = (root / name).parent if member.issym() else root
        target = (base / link).resolve() if not link.startswith("/") else Path(link).resolve()
        if link.startswith("/") or not target.is_relative_to(root.resolve()):
            raise InputConfigurationError(
                f"{UNTAR_ERROR}. Archive member '{name}' links to '{link}', outside the archive; expected links that stay inside it"
            )
    elif not (member.isfile() or member.isdir()):
        raise InputConfigurationError(f"{UNTAR_ERROR}. Archive member '{name}' has unsupported type {member.type!r}")


def extract(archive: Path, dest: Path, limits: ArchiveLimits | None = None) -> Path:
    """Extract ``archive`` into ``dest`` after checking every member; returns ``dest``."""
    limits = limits or ArchiveLimits.from_env()
    archive, dest = Path(archive), Path(dest)
    if not _is_gzip(archive):
        raise InputConfigurationError(f"{UNTAR_ERROR}. InputConfig.S3Uri: '{archive.name}' is not gzip-compressed; expected a .tar.gz archive")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members, total = [], 0
            # Iterate lazily so a member-count bomb is refused before the whole index is read.
            for member in tar:
                members.append(member)
                if len(members) > limits.max_members:
                    raise InputConfigurationError(
                        f"{UNTAR_ERROR}. The archive has more than {limits.max_members} members; expected at most {limits.max_members} (NEOCOMPILE_MAX_MEMBERS)"
                    )
                check_member(member, dest)
                total += max(member.size, 0) if member.isfile() else 0
                if total > limits.max_unpacked_bytes:
                    raise InputConfigurationError(
                        f"{UNTAR_ERROR}. The archive unpacks to more than {limits.max_unpacked_bytes} bytes; expected at most {limits.max_unpacked_bytes} (NEOCOMPILE_MAX_UNPACKED_BYTES)"
                    )
            extract_members(tar, dest, members)
    except InputConfigurationError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise InputConfigurationError(f"{UNTAR_ERROR}. {type(exc).__name__}: {exc}") from exc
    return dest


def extract_members(tar: tarfile.TarFile, dest: Path, members: list[tarfile.TarInfo]) -> None:
    """Extract already-checked members without owners, setuid bits or special files.

    Uses tarfile's 'data' filter where this Python has it (3.11.4+); Debian 12's Python 3.11.2 does not, so
    there the members are written by hand, with the same effect.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter="data")
        return
    for member in members:
        target = dest / member.name
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if member.issym():
            os.symlink(member.linkname, target)
        elif member.islnk():
            shutil.copyfile(dest / member.linkname, target)
        else:
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            os.chmod(target, member.mode & 0o755 | 0o600)


def visible_files(root: Path) -> list[Path]:
    """All regular files under ``root`` except hidden ones (any path component starting with '.'), sorted."""
    out = []
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file():
            out.append(path)
    return out


def find_exactly_one(root: Path, suffixes: tuple[str, ...], framework: str) -> Path:
    """Neo's rule: exactly one model file with one of ``suffixes`` (hidden files ignored)."""
    found = [p for p in visible_files(root) if p.suffix.lower() in suffixes]
    names = " or ".join(suffixes)
    if len(found) != 1:
        listed = ", ".join(str(p.relative_to(root)) for p in found) or "none"
        raise InputConfigurationError(
            f"Exactly one {names} file is allowed for {framework} models. Found {len(found)}: {listed}"
        )
    return found[0]
