"""S3 and S3-compatible servers as storage: ``s3://bucket/key`` URIs.

The client comes from boto3's default credential chain; ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
point it at another server (boto3 reads them itself). boto3 is imported inside functions so that
importing neocompile, and ``--help``, stay fast.
"""
from __future__ import annotations

import os
from pathlib import Path

from neocompile.errors import InputConfigurationError, NeoError, StorageError

DEFAULT_REGION = "us-east-1"

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {
    "403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
}
_CREDENTIAL_SOURCES = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role"


def _endpoint_override() -> str | None:
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def client():
    """A boto3 S3 client: default credentials, region (us-east-1 if none), endpoint from the env.

    With a custom endpoint the client uses path-style addressing (``http://host/bucket/key``), which
    S3-compatible servers such as SeaweedFS and MinIO need.
    """
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    config = Config(s3={"addressing_style": "path"}) if _endpoint_override() else None
    return session.client("s3", region_name=session.region_name or DEFAULT_REGION, config=config)


def _uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def _bucket_exists(s3, bucket: str) -> bool | None:
    """True/False if HeadBucket says so, None if it cannot tell (no access, no network)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return False if code in _NOT_FOUND | _NO_BUCKET else None
    except BotoCoreError:
        return None


def _translate(exc: BaseException, s3, *, action: str, bucket: str, key: str, field: str,
               missing: type[NeoError]) -> NeoError | None:
    """Turn a boto3/botocore/OS exception into the user-facing error, or None if unknown.

    ``action`` is "read" or "write"; ``missing`` is the class for a missing bucket/object/bad name
    (the user's input is wrong when reading, the output location when writing).
    """
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError
    from botocore.exceptions import (
        BotoCoreError, ClientError, ConnectionError as BotoConnectionError, NoCredentialsError,
        PartialCredentialsError, ProfileNotFound,
    )

    uri = _uri(bucket, key)
    where = f"{field} '{uri}'"
    # boto3 wraps upload ClientErrors in S3UploadFailedError (raised inside `except ClientError`).
    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
        exc = exc.__context__
    if isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
        exc = exc.last_exception

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message") or ""
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _NOT_FOUND and action == "read" and key:
            # HeadObject (first call of a download) answers a bare 404 for both cases.
            if s3 is None or _bucket_exists(s3, bucket) is not False:
                return missing(f"S3 object does not exist. Bucket: {bucket}, Key: {key}")
            code = "NoSuchBucket"
        if code in _NO_BUCKET or (code in _NOT_FOUND and action == "write"):
            return missing(
                f"S3 bucket does not exist. Bucket: {bucket} ({where}); expected an existing bucket"
            )
        if code in _DENIED or status == 403:
            detail = f"{code}: {message}" if message and message != "Forbidden" else code
            return StorageError(
                f"Access denied to {action} {where} ({detail}); check the credentials "
                f"({_CREDENTIAL_SOURCES}) and that they may {action} bucket '{bucket}'"
            )
        if code == "InvalidBucketName":
            return missing(f"{where}: '{bucket}' is not a valid S3 bucket name")
        return StorageError(f"S3 refused to {action} {where}: {code or status}: {message}")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"No usable AWS credentials to {action} {where} ({exc}); set {_CREDENTIAL_SOURCES}"
        )
    if isinstance(exc, ProfileNotFound):
        return StorageError(f"Cannot {action} {where}: {exc}; check AWS_PROFILE")
    if isinstance(exc, BotoConnectionError):
        endpoint = _endpoint_override() or "the AWS S3 endpoint"
        return StorageError(
            f"Cannot reach S3 at {endpoint} to {action} {where}: {exc}; check AWS_ENDPOINT_URL_S3 / "
            "AWS_ENDPOINT_URL and that the server is running"
        )
    if isinstance(exc, BotoCoreError):
        return StorageError(f"S3 {action} of {where} failed: {exc}")
    if isinstance(exc, OSError):
        return StorageError(f"S3 {action} of {where} failed on the local side: {exc}")
    return None


def _run(action: str, bucket: str, key: str, field: str, missing: type[NeoError], call):
    """Run ``call(s3_client)``, translating every S3 failure into a NeoError."""
    s3 = None
    try:
        s3 = client()
        return call(s3)
    except Exception as exc:  # noqa: BLE001 - translated below, anything unknown re-raised
        error = _translate(exc, s3, action=action, bucket=bucket, key=key, field=field,
                           missing=missing)
        if error is None:
            raise
        raise error from exc


def fetch(bucket: str, key: str, dest_dir: Path, field: str) -> Path:
    """Download ``s3://bucket/key`` into ``dest_dir`` under the key's base name; return the path."""
    name = key.rsplit("/", 1)[-1]
    if not name or name in (".", ".."):
        raise InputConfigurationError(
            f"{field} '{_uri(bucket, key)}' names no object; expected s3://{bucket}/<key> of a "
            "model archive (.tar.gz)"
        )
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"Cannot create download folder {dest_dir} for {field}: {exc.strerror}"
        ) from exc
    dest = dest_dir / name
    # s3transfer downloads to a temporary sibling and renames it, removing it on failure.
    _run("read", bucket, key, field, InputConfigurationError,
         lambda s3: s3.download_file(bucket, key, str(dest)))
    return dest


def _key(prefix: str, name: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def put(local_file: Path, bucket: str, prefix: str, name: str, field: str) -> str:
    """Upload ``local_file`` to ``s3://bucket/prefix/name`` and return that URI.

    Big files go up as a multipart upload, which s3transfer aborts on failure, so a failed put
    leaves no object and no pending parts.
    """
    key = _key(prefix, name)
    _run("write", bucket, key, field, StorageError,
         lambda s3: s3.upload_file(str(local_file), bucket, key))
    return _uri(bucket, key)


def check_writable(bucket: str, prefix: str, field: str) -> None:
    """Check that the bucket exists and these credentials reach it (HeadBucket)."""
    _run("write", bucket, prefix, field, StorageError, lambda s3: s3.head_bucket(Bucket=bucket))


def discard_partial(bucket: str, prefix: str, name: str, field: str) -> None:
    """Abort pending multipart uploads to ``s3://bucket/prefix/name`` (left by a killed ``put``)."""
    key = _key(prefix, name)

    def abort(s3) -> None:
        pages = s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key)
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Key"] == key:
                    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])

    _run("write", bucket, key, field, StorageError, abort)


# Small JSON objects read and replaced whole (the tuning cache): conditional writes let concurrent workers merge.

def read_object(bucket: str, key: str, field: str) -> tuple[bytes | None, str | None]:
    """The bytes and ETag of ``s3://bucket/key``, or ``(None, None)`` when there is no such object."""
    from botocore.exceptions import ClientError

    def get(s3):
        try:
            obj = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _NOT_FOUND:
                return None, None
            raise
        return obj["Body"].read(), obj.get("ETag")

    return _run("read", bucket, key, field, StorageError, get)


def write_object(bucket: str, key: str, data: bytes, field: str, if_match: str | None) -> bool:
    """PUT ``data`` only if the object still has ETag ``if_match`` (or, with None, still does not exist).

    False when another writer came first (the caller reads again and retries). A server without conditional
    writes (501 NotImplemented) gets a plain PUT: the last writer wins there.
    """
    from botocore.exceptions import ClientError

    condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}

    def put(s3):
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json", **condition)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            if code not in ("NotImplemented", "501"):
                raise
            s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json")
        return True

    return _run("write", bucket, key, field, StorageError, put)


def list_keys(bucket: str, prefix: str, field: str) -> list[str]:
    """Every key under ``prefix`` (a folder-like prefix: ``a/b`` lists ``a/b/...``), sorted."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    def listing(s3):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    return _run("read", bucket, base, field, StorageError, listing)


def delete_object(bucket: str, key: str, field: str) -> None:
    """Delete ``s3://bucket/key`` (no error when it is already gone)."""
    _run("write", bucket, key, field, StorageError, lambda s3: s3.delete_object(Bucket=bucket, Key=key))


def list_prefix(bucket: str, prefix: str, field: str) -> list[str]:
    """Every key that starts with ``prefix`` (exactly: S3's key-prefix rule), sorted; folder markers left out."""

    def listing(s3):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))

    return _run("read", bucket, prefix, field, StorageError, listing)


def open_stream(bucket: str, key: str, field: str):
    """The streaming body of ``s3://bucket/key`` (read(n) pulls from the connection; nothing is buffered whole)."""
    return _run("read", bucket, key, field, InputConfigurationError, lambda s3: s3.get_object(Bucket=bucket, Key=key)["Body"])
