"""Where model archives come from and compiled artifacts go: S3 buckets and local folders.

A location is a URI: ``s3://bucket/key``, ``file:///abs/path`` or a plain (relative or absolute) path.
Each scheme lives in its own module (:mod:`.s3`, :mod:`.local`) exposing ``fetch``, ``put`` and
``check_writable`` with the parsed location as leading arguments; this module parses and dispatches.
"""
from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlsplit

from neocompile.errors import ValidationError

INPUT_FIELD = "InputConfig.S3Uri"
OUTPUT_FIELD = "OutputConfig.S3OutputLocation"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_EXPECTED = "expected s3://bucket/key, file:///absolute/path or a local path"


def parse_uri(uri: str, field: str) -> tuple[str, ...]:
    """Split a location into ``("s3", bucket, key)`` or ``("file", absolute_path)``.

    The S3 key may be empty (``s3://bucket``); whether that is allowed is up to the caller. A plain
    path is made absolute against the current directory. A malformed location raises
    :class:`ValidationError` naming ``field``.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValidationError(f"{field} is empty ({uri!r}); {_EXPECTED}")
    match = _SCHEME.match(uri)
    if match is None:
        return ("file", str(Path(uri).expanduser().absolute()))
    scheme = match.group(1).lower()
    parts = urlsplit(uri)
    if scheme == "s3":
        bucket = parts.netloc
        if not bucket:
            raise ValidationError(f"{field} '{uri}' names no bucket; {_EXPECTED}")
        key = uri[match.end() + len(bucket):].lstrip("/")
        return ("s3", bucket, key)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValidationError(
                f"{field} '{uri}' names host '{parts.netloc}'; a file:// URI must be local "
                "(file:///absolute/path)"
            )
        if parts.query or parts.fragment:
            raise ValidationError(f"{field} '{uri}' has a query or fragment; {_EXPECTED}")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValidationError(f"{field} '{uri}' is not an absolute file URI; {_EXPECTED}")
        return ("file", path)
    raise ValidationError(f"{field} '{uri}' uses unsupported scheme '{scheme}://'; {_EXPECTED}")


def _scheme_module(scheme: str) -> ModuleType:
    # Imported on use: the S3 module pulls in boto3 only inside its functions, but keep --help lean.
    if scheme == "s3":
        from neocompile.storage import s3

        return s3
    from neocompile.storage import local

    return local


def fetch(uri: str, dest_dir: Path, field: str = INPUT_FIELD) -> Path:
    """Download the object or file at ``uri`` into ``dest_dir`` (created if needed); return its path.

    The file keeps the object's base name. A missing object, bucket or file raises
    :class:`InputConfigurationError`; an unreachable server, refused credentials or an I/O failure
    raises :class:`StorageError`.
    """
    scheme, *location = parse_uri(uri, field)
    return _scheme_module(scheme).fetch(*location, Path(dest_dir), field)


def put(local_file: Path, uri: str, name: str, field: str = OUTPUT_FIELD) -> str:
    """Store ``local_file`` as ``<uri>/<name>`` and return the URI of the stored object.

    Writes are all-or-nothing: a folder gets the file through a temporary sibling and an atomic
    rename, S3 through a single or multipart upload that is aborted on failure. Failures raise
    :class:`StorageError`. The result has the form of ``uri``: ``s3://...``, ``file://...`` or a path.
    """
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"put() needs a plain file name, got {name!r}")
    scheme, *location = parse_uri(uri, field)
    stored = _scheme_module(scheme).put(Path(local_file), *location, name, field)
    if scheme == "file" and _SCHEME.match(uri):
        return Path(stored).as_uri()
    return stored


def check_writable(uri: str, field: str = OUTPUT_FIELD) -> None:
    """Fail early with :class:`StorageError` if ``put`` to ``uri`` cannot work.

    Cheap: a folder is created if missing and probed with a temporary file; a bucket is checked to
    exist and to accept these credentials. Nothing is left behind except a newly created folder.
    """
    scheme, *location = parse_uri(uri, field)
    _scheme_module(scheme).check_writable(*location, field)


def discard_partial(uri: str, name: str, field: str = OUTPUT_FIELD) -> None:
    """Remove what an interrupted ``put(..., uri, name)`` may have left; never raises.

    For a job killed mid-upload: a folder may hold the hidden temporary file, a bucket a pending
    multipart upload. A completed ``<uri>/<name>`` is left alone.
    """
    try:
        scheme, *location = parse_uri(uri, field)
        _scheme_module(scheme).discard_partial(*location, name, field)
    except Exception:  # noqa: BLE001 - best effort on a path that is already failing
        pass


# Datasets (batch transform): every object under a key prefix, read as a stream.

def list_prefix(uri: str, field: str) -> list[tuple[str, str]]:
    """Every object whose key starts with the prefix ``uri`` (S3's S3Prefix rule: a key prefix, not only a folder),
    as ``(uri, relative name)`` sorted by key. The relative name is the key after the prefix's last ``/`` (the folder
    part), so sub-folders below it are kept: ``s3://b/in/`` with ``in/a/x.csv`` gives ``a/x.csv``. A local prefix
    is a file, a folder (walked recursively) or a path prefix of file names."""
    scheme, *location = parse_uri(uri, field)
    if scheme == "s3":
        from neocompile.storage import s3

        bucket, prefix = location
        base = prefix[: prefix.rfind("/") + 1]
        return [(f"s3://{bucket}/{key}", key[len(base):]) for key in s3.list_prefix(bucket, prefix, field)]
    path = Path(location[0])
    folder = path if str(location[0]).endswith("/") or path.is_dir() else path.parent
    as_uri = bool(_SCHEME.match(uri))
    found = []
    for file in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if file.is_file() and str(file).startswith(str(path)) and not file.name.startswith("."):
            found.append((file.as_uri() if as_uri else str(file), str(file.relative_to(folder))))
    return found


def open_stream(uri: str, field: str):
    """A binary file object reading the object at ``uri`` as it arrives (S3: the response body stream)."""
    scheme, *location = parse_uri(uri, field)
    if scheme == "s3":
        from neocompile.storage import s3

        return s3.open_stream(*location, field)
    try:
        return open(location[0], "rb")
    except OSError as exc:
        from neocompile.errors import StorageError

        raise StorageError(f"{field} '{uri}' cannot be read: {exc.strerror}") from None
