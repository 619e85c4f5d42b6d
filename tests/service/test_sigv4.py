"""SigV4 verification against requests signed by botocore's own signer, and through a real boto3 client."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock
from urllib.parse import urlsplit

import boto3
import botocore
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from neocompile.service.sigv4 import AuthError, Caller, load_keys, region_of, verify

KEY, SECRET = "AKIDNEOCOMPILE0001", "s3cr3t/With+Symbols%And=Signs"
KEYS = {KEY: SECRET, "AKIDOTHER": "other-secret"}
ENDPOINT = "http://127.0.0.1:8080"
T0 = dt.datetime(2024, 1, 1, 0, 0, 0)  # naive UTC, as botocore's clock returns it
T0_EPOCH = T0.replace(tzinfo=dt.UTC).timestamp()
MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method. Consult the service documentation for details.")


def sign(url=ENDPOINT + "/", body=b'{"MaxResults": 10}', *, key=KEY, secret=SECRET, region="us-west-2",
         service="sagemaker", at=T0, method="POST", headers=None, presign_expires=None):
    """A request as boto3 sends it (X-Amz-Target, JSON 1.1), signed by botocore at time `at`; returns the server's
    view: (method, path, query, headers, body). `Host` is added as urllib3 puts it on the wire."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {
        "X-Amz-Target": "SageMaker.ListCompilationJobs", "Content-Type": "application/x-amz-json-1.1",
        "User-Agent": "Boto3/1.44.8 md/Botocore#1.44.8", "amz-sdk-request": "attempt=1; max=1"})
    credentials = Credentials(key, secret)
    signer = (SigV4QueryAuth(credentials, service, region, expires=presign_expires) if presign_expires
              else SigV4Auth(credentials, service, region))
    with mock.patch("botocore.auth.get_current_datetime", lambda *a, **k: at):  # botocore reads the wall clock
        signer.add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    wire = dict(prepared.headers, Host=parts.netloc)
    return prepared.method, parts.path, parts.query, wire, prepared.body or b""


def check(request, keys=KEYS, now=T0_EPOCH):
    return verify(*request, keys=keys, now=now)


def rejected(request, keys=KEYS, now=T0_EPOCH) -> AuthError:
    with pytest.raises(AuthError) as e:
        check(request, keys, now)
    return e.value


def with_header(request, name, value):
    method, path, query, headers, body = request
    return method, path, query, {**headers, name: value}, body


def test_valid_request_is_accepted_and_names_key_and_region():
    assert check(sign()) == Caller(access_key=KEY, region="us-west-2")
    assert check(sign(region="eu-central-1")).region == "eu-central-1"
    assert check(sign(key="AKIDOTHER", secret="other-secret")).access_key == "AKIDOTHER"


def test_acceptance_does_not_depend_on_the_default_clock():
    assert verify(*sign(at=dt.datetime.now(dt.UTC).replace(tzinfo=None)), keys=KEYS).region == "us-west-2"


def test_unknown_key_id_is_unrecognized_client():
    e = rejected(sign(key="AKIDUNKNOWN"))
    assert (e.code, e.status, e.message) == ("UnrecognizedClientException", 400,
                                             "The security token included in the request is invalid.")


def test_wrong_secret_is_invalid_signature_with_the_canonical_request():
    e = rejected(sign(secret="not-the-secret"))
    assert (e.code, e.status) == ("InvalidSignatureException", 400)
    assert e.message.startswith(MISMATCH)
    assert "The Canonical String for this request should have been\n'POST\n/\n\n" in e.message
    assert "20240101/us-west-2/sagemaker/aws4_request" in e.message


def test_tampered_body_is_invalid_signature():
    method, path, query, headers, _ = sign()
    e = rejected((method, path, query, headers, b'{"MaxResults": 100}'))
    assert e.code == "InvalidSignatureException" and e.message.startswith(MISMATCH)


def test_tampered_signed_header_is_invalid_signature():
    e = rejected(with_header(sign(), "X-Amz-Target", "SageMaker.DeleteCompilationJob"))
    assert e.code == "InvalidSignatureException" and e.message.startswith(MISMATCH)


def test_unsigned_header_may_change():
    assert check(with_header(sign(), "Accept-Encoding", "identity")).access_key == KEY


def test_signature_older_than_five_minutes_has_expired():
    e = rejected(sign(), now=T0_EPOCH + 600)
    assert (e.code, e.status) == ("InvalidSignatureException", 400)
    assert e.message == ("Signature expired: 20240101T000000Z is now earlier than 20240101T000500Z "
                         "(20240101T001000Z - 5 min.)")
    assert rejected(sign(), now=T0_EPOCH + 360).message.startswith("Signature expired: 20240101T000000Z")
    assert check(sign(), now=T0_EPOCH + 240).access_key == KEY  # within the window


def test_signature_from_the_future_is_not_yet_current():
    e = rejected(sign(at=T0 + dt.timedelta(minutes=6)))
    assert (e.code, e.status) == ("InvalidSignatureException", 400)
    assert e.message == ("Signature not yet current: 20240101T000600Z is still later than 20240101T000500Z "
                         "(20240101T000000Z + 5 min.)")
    assert check(sign(at=T0 + dt.timedelta(minutes=4))).access_key == KEY


def test_missing_authorization_is_missing_authentication_token():
    method, path, query, headers, body = sign()
    for drop in ({"Authorization"}, {"Authorization", "X-Amz-Date"}):
        e = rejected((method, path, query, {k: v for k, v in headers.items() if k not in drop}, body))
        assert (e.code, e.status, e.message) == ("MissingAuthenticationTokenException", 403,
                                                 "Missing Authentication Token")
    assert rejected(with_header(sign(), "Authorization", "Bearer abc")).code == "MissingAuthenticationTokenException"


def test_authorization_without_its_parts_lists_what_is_missing():
    request = sign()
    method, path, query, headers, body = request
    header = "AWS4-HMAC-SHA256 Credential=AKIDNEOCOMPILE0001/20240101/us-west-2/sagemaker/aws4_request"
    no_date = {k: v for k, v in headers.items() if k != "X-Amz-Date"}
    e = rejected((method, path, query, {**no_date, "Authorization": header}, body))
    assert (e.code, e.status) == ("IncompleteSignatureException", 400)
    assert e.message == ("Authorization header requires 'Signature' parameter. "
                         "Authorization header requires 'SignedHeaders' parameter. "
                         "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
                         f"Authorization={header}")


def test_malformed_authorization_parts_are_incomplete_signature():
    auth = sign()[3]["Authorization"]
    e = rejected(with_header(sign(), "Authorization", auth.replace("Credential=", "Credential= ")))
    assert e.code == "IncompleteSignatureException"
    assert e.message.startswith("'AKIDNEOCOMPILE0001/20240101/us-west-2/sagemaker/aws4_request' not a valid "
                                "key=value pair (missing equal-sign) in Authorization header: 'AWS4-HMAC-SHA256 ")
    e = rejected(with_header(sign(), "Authorization", auth.replace("/aws4_request", "")))
    assert (e.code, e.message) == ("IncompleteSignatureException", (
        "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
        "got 'AKIDNEOCOMPILE0001/20240101/us-west-2/sagemaker'"))
    e = rejected(with_header(sign(), "Authorization", auth.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512")))
    assert (e.code, e.message) == ("IncompleteSignatureException",
                                   "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512' (only AWS4-HMAC-SHA256 for now).")
    e = rejected(with_header(sign(), "X-Amz-Date", "2024-01-01T00:00:00Z"))
    assert e.message.startswith("Date must be in ISO-8601 'basic format'. Got '2024-01-01T00:00:00Z'.")


def test_scope_for_another_service_is_refused():
    e = rejected(sign(service="execute-api"))
    assert (e.code, e.status, e.message) == ("InvalidSignatureException", 400,
                                             "Credential should be scoped to correct service: 'sagemaker'.")


def test_scope_date_must_be_the_request_day():
    request = sign()
    auth = request[3]["Authorization"].replace("/20240101/", "/20231231/")
    e = rejected(with_header(request, "Authorization", auth))
    assert (e.code, e.message) == ("InvalidSignatureException", (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
        "'20231231' != '20240101', from '20240101T000000Z'."))


def test_host_must_be_signed():
    request = sign()
    auth = request[3]["Authorization"]
    e = rejected(with_header(request, "Authorization", auth.replace("SignedHeaders=", "SignedHeaders=x;").replace(
        ";host;", ";")))
    assert (e.code, e.message) == ("InvalidSignatureException",
                                   "'Host' must be a 'SignedHeader' in the AWS Authorization.")


def test_signed_header_absent_from_the_request_is_named():
    method, path, query, headers, body = sign()
    e = rejected((method, path, query, {k: v for k, v in headers.items() if k != "X-Amz-Target"}, body))
    assert e.code == "IncompleteSignatureException"
    assert e.message == "'x-amz-target' is named as a SignedHeader, but it does not exist in the HTTP request."


def test_content_sha256_header_must_match_the_body():
    body = b'{"MaxResults": 10}'
    good = {"X-Amz-Target": "SageMaker.ListCompilationJobs", "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    assert check(sign(body=body, headers=good)).access_key == KEY
    e = rejected(sign(body=body, headers={**good, "X-Amz-Content-SHA256": hashlib.sha256(b"{}").hexdigest()}))
    assert (e.code, e.status) == ("XAmzContentSHA256Mismatch", 400)
    assert rejected(sign(body=body, headers={**good, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})).status == 400


def test_header_names_match_in_any_case():
    method, path, query, headers, body = sign()
    for transform in (str.lower, str.upper, str.title):
        assert check((method, path, query, {transform(k): v for k, v in headers.items()}, body)).access_key == KEY
    message = http.client.HTTPMessage()
    for name, value in headers.items():
        message[name.upper()] = value
    assert check((method, path, query, message, body)).region == "us-west-2"


def test_header_values_are_trimmed_and_repeated_headers_joined():
    method, path, query, headers, body = sign(headers={"X-Amz-Target": "SageMaker.ListCompilationJobs",
                                                       "X-Custom": "a  b"})
    assert check((method, path, query, {**headers, "X-Custom": "  a b "}, body)).access_key == KEY
    message = http.client.HTTPMessage()
    for name, value in headers.items():
        message[name] = value
    message["X-Custom"] = "again"  # a second X-Custom line is part of the signed value ("a b,again"): refused
    assert rejected((method, path, query, message, body)).code == "InvalidSignatureException"


def test_path_and_query_are_canonicalized_like_botocore():
    url = ENDPOINT + "/some%20dir/./a~b/../file%2Bname?b=2&a=1&c=x%20y&a=0&empty="
    assert check(sign(url=url)).access_key == KEY
    method, path, query, headers, body = sign(url=url)
    assert rejected((method, path.replace("file", "File"), query, headers, body)).code == "InvalidSignatureException"
    assert rejected((method, path, query + "&d=4", headers, body)).code == "InvalidSignatureException"
    assert check((method, f"{path}?{query}", "", headers, body)).access_key == KEY  # http.server's self.path


def test_date_header_stands_in_for_x_amz_date():
    request = sign(headers={"X-Amz-Target": "SageMaker.ListCompilationJobs", "Date": "placeholder"})
    assert "X-Amz-Date" not in request[3] and request[3]["Date"] == "Mon, 01 Jan 2024 00:00:00 -0000"
    assert check(request).access_key == KEY


def test_presigned_request_is_accepted_until_it_expires():
    request = sign(url=ENDPOINT + "/?Action=x", method="GET", body=b"", headers={}, presign_expires=900)
    assert "X-Amz-Signature=" in request[2] and "Authorization" not in request[3]
    assert check(request, now=T0_EPOCH + 800).region == "us-west-2"
    e = rejected(request, now=T0_EPOCH + 1000)
    assert e.message == ("Signature expired: 20240101T000000Z is now earlier than 20240101T000140Z "
                         "(20240101T001640Z - 900 sec.)")
    method, path, query, headers, body = request
    assert rejected((method, path, query.replace("Action=x", "Action=y"), headers, body)).message.startswith(MISMATCH)
    assert rejected(with_header(request, "Authorization", "AWS4-HMAC-SHA256 x=y")).message == (
        "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.")
    no_expiry = "&".join(p for p in query.split("&") if not p.startswith("X-Amz-Expires="))
    assert rejected((method, path, no_expiry, headers, body), now=T0_EPOCH + 360).message.startswith(
        "Signature expired")  # without X-Amz-Expires the usual 5 minutes (and the signature is also wrong)
    assert rejected((method, path, query.replace("X-Amz-Expires=900", "X-Amz-Expires=0"), headers, body)).message == (
        "X-Amz-Expires must be a whole number of seconds from 1 to 604800, got '0'.")
    e = rejected((method, path, "X-Amz-Algorithm=AWS4-HMAC-SHA256", headers, body))
    assert (e.code, e.message) == ("IncompleteSignatureException", (
        "AWS query-string parameters must include 'X-Amz-Credential'. AWS query-string parameters must include "
        "'X-Amz-Signature'. AWS query-string parameters must include 'X-Amz-SignedHeaders'. AWS query-string "
        "parameters must include 'X-Amz-Date'. Re-examine the query-string parameters."))


def test_auth_error_survives_a_context_manager():
    @contextlib.contextmanager
    def scope():
        yield

    # The frozen dataclass must let contextlib set __traceback__ when the error leaves scope().
    with pytest.raises(AuthError) as e, scope():
        check(sign(key="AKIDUNKNOWN"))
    assert str(e.value) == "UnrecognizedClientException: The security token included in the request is invalid."
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.value.code = "other"


def test_region_of_reads_the_scope_without_verifying():
    assert region_of(sign(region="ap-south-1", secret="wrong")[3]) == "ap-south-1"
    assert region_of({"authorization": "AWS4-HMAC-SHA256 Credential=a/b/eu-west-3/d/e, Signature=x"}) == "eu-west-3"
    assert region_of({}) is None
    assert region_of({"Authorization": "AWS4-HMAC-SHA256 Credential= a/b/c/d/e"}) is None
    assert region_of({"Authorization": "AWS4-HMAC-SHA256 Credential=a/b/c"}) is None


# --- load_keys --------------------------------------------------------------------------------------------------

def test_load_keys_reads_every_profile_and_the_environment(tmp_path):
    path = tmp_path / "credentials"
    path.write_text("[default]\naws_access_key_id = AKIDONE\naws_secret_access_key = secret%one\n\n"
                    "[ci]\naws_access_key_id=AKIDTWO\naws_secret_access_key=secret2\nregion = us-east-1\n")
    env = {"NEOCOMPILE_ACCESS_KEY_ID": "AKIDENV", "NEOCOMPILE_SECRET_ACCESS_KEY": "envsecret"}
    expected = {"AKIDONE": "secret%one", "AKIDTWO": "secret2", "AKIDENV": "envsecret"}
    assert load_keys(str(path), environ=env) == expected
    assert load_keys(environ={**env, "NEOCOMPILE_ACCESS_KEYS_FILE": str(path)}) == expected
    assert load_keys(environ=env) == {"AKIDENV": "envsecret"}
    assert load_keys(environ={}) == {}  # authentication off


@pytest.mark.parametrize("text, complaint", [
    ("[default]\naws_access_key_id = AKIDONE\n", "section [default]: missing or empty aws_secret_access_key"),
    ("[a]\naws_access_key_id=K\naws_secret_access_key=1\n[b]\naws_access_key_id=K\naws_secret_access_key=2\n",
     "section [b]: access key id 'K' is already defined with a different secret"),
    ("aws_access_key_id = AKIDONE\n", "not in the AWS credentials INI format"),
    ("", "no [profile] section with aws_access_key_id and aws_secret_access_key"),
])
def test_load_keys_names_the_file_and_section_of_a_malformed_file(tmp_path, text, complaint):
    path = tmp_path / "credentials"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        load_keys(str(path), environ={})
    assert str(path) in str(e.value) and complaint in str(e.value)


def test_load_keys_refuses_a_missing_file_or_half_an_env_pair(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_keys(str(tmp_path / "absent"), environ={})
    with pytest.raises(ValueError, match="NEOCOMPILE_ACCESS_KEY_ID is set but NEOCOMPILE_SECRET_ACCESS_KEY is not"):
        load_keys(environ={"NEOCOMPILE_ACCESS_KEY_ID": "AKID"})


# --- through boto3 ----------------------------------------------------------------------------------------------

@pytest.fixture
def server():
    """A tiny JSON 1.1 server on 127.0.0.1 that authenticates with sigv4 and answers {} to everything."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            path, _, query = self.path.partition("?")
            try:
                verify(self.command, path, query, self.headers, body, KEYS)
                status, payload = 200, {}
            except AuthError as e:
                status, payload = e.status, {"__type": e.code, "message": e.message}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def client(endpoint, key=KEY, secret=SECRET, **config):
    return boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-west-2", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}, **config))


def test_boto3_client_with_the_right_key_is_served(server):
    response = client(server).list_compilation_jobs()
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


@pytest.mark.parametrize("kwargs, code, status", [
    ({"secret": "wrong"}, "InvalidSignatureException", 400),
    ({"key": "AKIDUNKNOWN"}, "UnrecognizedClientException", 400),
    ({"signature_version": botocore.UNSIGNED}, "MissingAuthenticationTokenException", 403),
])
def test_boto3_client_sees_aws_error_codes(server, kwargs, code, status):
    with pytest.raises(ClientError) as e:
        client(server, **kwargs).list_compilation_jobs()
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
