"""AWS Signature Version 4, checked on the server side of the SageMaker JSON API.

boto3 and the aws CLI sign every request (`Authorization: AWS4-HMAC-SHA256 Credential=AKID/20240101/us-west-2/
sagemaker/aws4_request, SignedHeaders=..., Signature=...`). `verify` recomputes that signature from the request and
the configured access keys; `load_keys` says where the keys come from; `region_of` reads the region from the
credential scope without checking anything (ARNs need it when authentication is off).

Failures are `AuthError`s carrying the code, text and status AWS's front end (Coral, shared by the JSON-protocol
services) answers, so clients print what they would print against AWS. Evidence for each:
  * MissingAuthenticationTokenException, 403, "Missing Authentication Token": a SageMaker endpoint called unsigned
    (aws/amazon-sagemaker-examples#290: `403 Forbidden`, `x-amzn-ErrorType: MissingAuthenticationTokenException`);
    AWS's Common Errors pages give MissingAuthenticationToken 403 too. DynamoDB answers 400 "Request is missing
    Authentication Token" (architect/dynalite#105); we follow the SageMaker capture.
  * IncompleteSignatureException, 400: "Authorization header requires 'Credential' parameter. ..." (the missing
    parts listed, then `Authorization=<header>`), "'x' not a valid key=value pair (missing equal-sign) in
    Authorization header: '...'.", "Credential must have exactly 5 slash-delimited elements, e.g.
    keyid/date/region/service/term, got '...'", "Date must be in ISO-8601 'basic format'. ...", "Unsupported AWS
    'algorithm': ..." (iann0036/cloud9-sync#10 shows 400; texts as recorded from DynamoDB in dynalite's server),
    "'x' is named as a SignedHeader, but it does not exist in the HTTP request." (AppSync,
    awslabs/aws-mobile-appsync-sdk-js#702).
  * UnrecognizedClientException, 400, "The security token included in the request is invalid.": SageMaker itself
    (aws/amazon-sagemaker-operator-for-k8s#99: "status code: 400"), Cognito and DynamoDB alike.
  * InvalidSignatureException, 400: the signature mismatch text (+ the canonical request and string to sign, as
    Coral sends them), "Signature expired: A is now earlier than B (NOW - 5 min.)" and "Signature not yet current:
    A is still later than B (NOW + 5 min.)" (aws/aws-sdk-js#254, serverless/enterprise#11; JSON services use a
    5-minute window), the credential-scope texts ("Credential should be scoped to correct service: 'sagemaker'.",
    "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: ...", IAM's SigV4
    troubleshooting page), "'Host' must be a 'SignedHeader' in the AWS Authorization." and "Found both
    'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.".
A body that does not match its x-amz-content-sha256 header gets S3's XAmzContentSHA256Mismatch (400), the only
service that documents the check. Texts and the order of the checks follow what dynalite (architect/dynalite,
index.js) recorded from Coral.
"""
from __future__ import annotations

import configparser
import hashlib
import hmac
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

SERVICE = "sagemaker"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_SECONDS = 300
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600  # SigV4's limit on X-Amz-Expires
_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_BASIC_ISO = re.compile(r"\d{8}T\d{6}Z")
_REGION = re.compile(r"[a-z0-9-]+")
_PRESIGN_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-SignedHeaders", "X-Amz-Date")


@dataclass(frozen=True)
class AuthError(Exception):
    """A request that is not authenticated: answer `{"__type": code, "message": message}` with `status`."""

    code: str
    message: str
    status: int

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def _exception_setattr(self, name, value, _frozen=AuthError.__setattr__):
    # The frozen __setattr__ would also refuse `exc.__traceback__ = tb`, which contextlib does in Python code when
    # the exception leaves a @contextmanager block; let the interpreter's bookkeeping through, keep fields frozen.
    (Exception.__setattr__ if name.startswith("__") else _frozen)(self, name, value)


AuthError.__setattr__ = _exception_setattr


@dataclass(frozen=True)
class Caller:
    """Who signed a verified request."""

    access_key: str
    region: str  # 3rd element of the credential scope


def _missing_token() -> AuthError:
    return AuthError("MissingAuthenticationTokenException", "Missing Authentication Token", 403)


def _incomplete(message: str) -> AuthError:
    return AuthError("IncompleteSignatureException", message, 400)


def _invalid(message: str) -> AuthError:
    return AuthError("InvalidSignatureException", message, 400)


# --- keys -------------------------------------------------------------------------------------------------------

def load_keys(path: str | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Access key id -> secret. Sources: a file in the AWS shared-credentials INI format (any number of
    [profile] sections with aws_access_key_id / aws_secret_access_key; the path from `path` or env
    NEOCOMPILE_ACCESS_KEYS_FILE), plus env NEOCOMPILE_ACCESS_KEY_ID + NEOCOMPILE_SECRET_ACCESS_KEY.
    Empty dict = authentication off. A malformed file raises ValueError naming the file, section and what is wrong."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("NEOCOMPILE_ACCESS_KEYS_FILE") or None
    keys: dict[str, str] = {}

    def add(key_id: str, secret: str, where: str) -> None:
        if keys.get(key_id, secret) != secret:
            raise ValueError(f"{where}: access key id {key_id!r} is already defined with a different secret")
        keys[key_id] = secret

    if path:
        # No interpolation: secrets may contain '%'.
        parser = configparser.ConfigParser(interpolation=None, default_section="\0no-defaults")
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f)
        except OSError as e:
            raise ValueError(f"access keys file {path}: cannot read it: {e.strerror or e}") from None
        except configparser.Error as e:
            raise ValueError(f"access keys file {path}: not in the AWS credentials INI format: {e}") from None
        for section in parser.sections():
            key_id = parser[section].get("aws_access_key_id", "").strip()
            secret = parser[section].get("aws_secret_access_key", "").strip()
            missing = [n for n, v in (("aws_access_key_id", key_id), ("aws_secret_access_key", secret)) if not v]
            if missing:
                # Strict: a typo here must not quietly leave a key out (or authentication off).
                raise ValueError(f"access keys file {path}, section [{section}]: missing or empty "
                                 f"{' and '.join(missing)}")
            add(key_id, secret, f"access keys file {path}, section [{section}]")
        if not keys:
            raise ValueError(f"access keys file {path}: no [profile] section with aws_access_key_id and "
                             f"aws_secret_access_key; authentication would be off")
    env_id = environ.get("NEOCOMPILE_ACCESS_KEY_ID", "").strip()
    env_secret = environ.get("NEOCOMPILE_SECRET_ACCESS_KEY", "").strip()
    if bool(env_id) != bool(env_secret):
        given, absent = (("NEOCOMPILE_ACCESS_KEY_ID", "NEOCOMPILE_SECRET_ACCESS_KEY") if env_id else
                         ("NEOCOMPILE_SECRET_ACCESS_KEY", "NEOCOMPILE_ACCESS_KEY_ID"))
        raise ValueError(f"{given} is set but {absent} is not; set both or neither")
    if env_id:
        add(env_id, env_secret, "NEOCOMPILE_ACCESS_KEY_ID")
    return keys


# --- parsing ----------------------------------------------------------------------------------------------------

def _normalize_headers(headers: Mapping[str, str]) -> dict[str, list[str]]:
    # items() yields every occurrence for http.client.HTTPMessage, one per name for a dict.
    out: dict[str, list[str]] = {}
    for name, value in headers.items():
        out.setdefault(name.strip().lower(), []).append(value)
    return out


def _auth_params(authorization: str) -> tuple[str, dict[str, str]]:
    """Split `ALGO k=v, k=v, ...` as Coral does: on commas and whitespace (so a stray space is an error)."""
    algorithm, _, rest = authorization.strip().partition(" ")
    params: dict[str, str] = {}
    for token in filter(None, re.split(r"[,\s]+", rest)):
        if "=" not in token:
            raise _incomplete(f"'{token}' not a valid key=value pair (missing equal-sign) in Authorization "
                              f"header: '{authorization}'.")
        key, _, value = token.partition("=")
        params[key] = value
    return algorithm, params


def region_of(headers: Mapping[str, str]) -> str | None:
    """The region from an Authorization header's credential scope, without verifying anything (for ARNs when auth
    is off)."""
    authorization = _normalize_headers(headers).get("authorization", [""])[0]
    try:
        scope = _auth_params(authorization)[1].get("Credential", "").split("/")
    except AuthError:
        return None
    return scope[2] if len(scope) == 5 and _REGION.fullmatch(scope[2]) else None


def _query_pairs(query: str) -> list[tuple[str, str]]:
    pairs = []
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        pairs.append((unquote(key), unquote(value)))  # '+' stays '+': SigV4 encodes spaces as %20
    return pairs


def _canonical_query(pairs: list[tuple[str, str]]) -> str:
    # Decode then re-encode with the RFC 3986 unreserved set, sort by key then value (the spec's rules; botocore's
    # already-encoded query strings come out unchanged).
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _canonical_uri(path: str) -> str:
    """botocore's rule for every service but S3: drop '.', '..' and empty segments from the path as sent, then
    percent-encode it again (so '%20' on the wire is '%2520' here: the spec's "encode twice")."""
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    normalized = "/" + "/".join(segments) + ("/" if segments and path.endswith("/") else "")
    return quote(normalized, safe="/~")


def _parse_time(amz_date: str) -> datetime:
    if not _BASIC_ISO.fullmatch(amz_date):
        raise ValueError(amz_date)
    return datetime.strptime(amz_date, _TIMESTAMP).replace(tzinfo=UTC)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    key = _hmac(f"AWS4{secret}".encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


# --- verification -----------------------------------------------------------------------------------------------

def verify(method: str, path: str, query: str, headers: Mapping[str, str], body: bytes,
           keys: Mapping[str, str], now: float | None = None) -> Caller:
    """Raise AuthError unless the request carries a valid SigV4 signature by one of `keys`.

    `path` and `query` are as received (still percent-encoded; a '?' left in `path` is split off). The signature is
    read from the Authorization header or, for presigned requests, from the X-Amz-* query parameters."""
    if "?" in path:
        path, _, extra = path.partition("?")
        query = query or extra
    now = time.time() if now is None else now
    hdrs = _normalize_headers(headers)
    pairs = _query_pairs(query)
    params = dict(pairs)
    authorization = hdrs.get("authorization", [""])[0].strip()

    presigned = "X-Amz-Algorithm" in params
    if authorization and presigned:
        raise _invalid("Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.")
    if authorization.startswith("AWS4-"):
        algorithm, auth = _auth_params(authorization)
        credential, signed, signature = (auth.get(k) for k in ("Credential", "SignedHeaders", "Signature"))
        amz_date = hdrs.get("x-amz-date", [""])[0].strip()
        if not amz_date and hdrs.get("date"):
            try:  # SigV4 falls back to the Date header, signing its ISO-8601 basic form
                date = parsedate_to_datetime(hdrs["date"][0])
            except (TypeError, ValueError):
                amz_date = hdrs["date"][0].strip()
            else:  # botocore writes "-0000", which parses to a naive datetime: it means UTC
                amz_date = (date.astimezone(UTC) if date.tzinfo else date).strftime(_TIMESTAMP)
        missing = [f"Authorization header requires '{k}' parameter. "
                   for k, v in (("Credential", credential), ("Signature", signature), ("SignedHeaders", signed))
                   if not v]
        if not amz_date:
            missing.append("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ")
        if missing:
            raise _incomplete("".join(missing) + f"Authorization={authorization}")
        expires = None
        canonical_pairs = pairs
    elif presigned and not authorization:
        # Presigned: the same signature, its parts in the query string; X-Amz-Signature itself is not signed.
        algorithm, credential, signature, signed, amz_date = (params.get(k, "") for k in _PRESIGN_PARAMS)
        absent = [k for k in _PRESIGN_PARAMS if not params.get(k)]
        if absent:
            raise _incomplete("".join(f"AWS query-string parameters must include '{k}'. " for k in absent)
                              + "Re-examine the query-string parameters.")
        raw_expires = params.get("X-Amz-Expires")  # absent: the usual 5-minute window
        if raw_expires is not None and not (raw_expires.isdigit() and 1 <= int(raw_expires) <= MAX_PRESIGN_EXPIRES):
            raise _incomplete(f"X-Amz-Expires must be a whole number of seconds from 1 to {MAX_PRESIGN_EXPIRES}, "
                              f"got '{raw_expires}'.")
        expires = None if raw_expires is None else int(raw_expires)
        canonical_pairs = [(k, v) for k, v in pairs if k != "X-Amz-Signature"]
    else:
        # Coral does not take an Authorization header of another scheme (Basic, Bearer) as an AWS token at all.
        raise _missing_token()

    # Coral's order: date, Host signed, algorithm, credential shape, scope, key id, signature.
    try:
        when = _parse_time(amz_date)
    except ValueError:
        raise _incomplete(f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. "
                          f"See http://en.wikipedia.org/wiki/ISO_8601") from None
    _check_time(when, amz_date, now, expires)
    signed_names = sorted({h.strip().lower() for h in signed.split(";") if h.strip()})
    if "host" not in signed_names:
        raise _invalid("'Host' must be a 'SignedHeader' in the AWS Authorization.")
    if algorithm != ALGORITHM:
        raise _incomplete(f"Unsupported AWS 'algorithm': '{algorithm}' (only {ALGORITHM} for now).")
    scope = credential.split("/")
    if len(scope) != 5:
        raise _incomplete(f"Credential must have exactly 5 slash-delimited elements, "
                          f"e.g. keyid/date/region/service/term, got '{credential}'")
    key_id, scope_date, region, service, terminator = scope
    problems = []
    if not _REGION.fullmatch(region):
        problems.append(f"Credential should be scoped to a valid region, not '{region}'.")
    if service != SERVICE:
        problems.append(f"Credential should be scoped to correct service: '{SERVICE}'.")
    if terminator != "aws4_request":
        problems.append(f"Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'.")
    if scope_date != amz_date[:8]:
        problems.append(f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
                        f"HTTP: '{scope_date}' != '{amz_date[:8]}', from '{amz_date}'.")
    if problems:
        raise _invalid(" ".join(problems))
    secret = keys.get(key_id)
    if secret is None:
        raise AuthError("UnrecognizedClientException", "The security token included in the request is invalid.", 400)

    absent = [h for h in signed_names if h not in hdrs]
    if absent:
        raise _incomplete(f"'{absent[0]}' is named as a SignedHeader, but it does not exist in the HTTP request.")
    body_hash = hashlib.sha256(body).hexdigest()
    declared = hdrs.get("x-amz-content-sha256", [body_hash])[0].strip()
    if declared != body_hash:
        # Only S3 documents this check (and UNSIGNED-PAYLOAD); elsewhere the body is always hashed. S3's code/text.
        raise AuthError("XAmzContentSHA256Mismatch",
                        "The provided 'x-amz-content-sha256' header does not match what was computed.", 400)
    canonical_request = "\n".join([
        method.upper(),
        _canonical_uri(path),
        _canonical_query(canonical_pairs),
        "".join(f"{h}:{','.join(' '.join(v.split()) for v in hdrs[h])}\n" for h in signed_names),
        ";".join(signed_names),
        body_hash,
    ])
    string_to_sign = "\n".join([ALGORITHM, amz_date, "/".join(scope[1:]),
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    expected = hmac.new(signing_key(secret, scope_date, region, service), string_to_sign.encode(),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.lower().encode("utf-8", "replace")):  # any text
        raise _invalid(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method. Consult the service documentation for details.\n\n"
            f"The Canonical String for this request should have been\n'{canonical_request}'\n\n"
            f"The String-to-Sign should have been\n'{string_to_sign}'\n")
    return Caller(access_key=key_id, region=region)


def _check_time(when: datetime, amz_date: str, now: float, expires: int | None) -> None:
    def stamp(offset: int) -> str:
        return datetime.fromtimestamp(int(now) + offset, UTC).strftime(_TIMESTAMP)

    age = int(now) - when.timestamp()
    if age < -MAX_SKEW_SECONDS:
        raise _invalid(f"Signature not yet current: {amz_date} is still later than {stamp(MAX_SKEW_SECONDS)} "
                       f"({stamp(0)} + 5 min.)")
    if expires is None and age > MAX_SKEW_SECONDS:
        raise _invalid(f"Signature expired: {amz_date} is now earlier than {stamp(-MAX_SKEW_SECONDS)} "
                       f"({stamp(0)} - 5 min.)")
    if expires is not None and age > expires:
        # A presigned request lives X-Amz-Expires seconds instead of the skew window (our wording: Coral's text for
        # an expired presigned request was not found).
        raise _invalid(f"Signature expired: {amz_date} is now earlier than {stamp(-expires)} "
                       f"({stamp(0)} - {expires} sec.)")
