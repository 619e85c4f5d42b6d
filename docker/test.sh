#!/usr/bin/env bash
# `make test-docker`: the job service end to end in containers. PostgreSQL, one `neocompile serve --workers 0` and two
# `neocompile worker` containers on their own docker network; boto3 on the host submits one compile per target through
# the published port, SigV4-signed with generated keys, and waits for COMPLETED; each package must be in the shared
# bind mount with the ArtifactDigest the API reported, and the two jobs must have run on the two workers. Everything
# is removed at the end, failed or not (TEST_DOCKER_KEEP=1 keeps it for a look).
#   docker/test.sh                  needs the image (docker/build.sh) and a running dockerd
# Environment: NEOCOMPILE_IMAGE (default neocompile:latest); NEOCOMPILE_POSTGRES_IMAGE (default: neocompile-postgres:15,
# Debian's postgresql-15 built here from docker/postgres-test.Dockerfile on the debootstrapped base, as no registry is
# needed; postgres:15 works too); PYTHON (a Python with boto3, default .venv/bin/python); TEST_DOCKER_TARGETS (default
# "ml_c4 rasp3b": one native, one cross-compiled and verified under qemu); TEST_DOCKER_TIMEOUT (seconds, default 1200).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${NEOCOMPILE_IMAGE:-neocompile:latest}
pg_image=${NEOCOMPILE_POSTGRES_IMAGE:-neocompile-postgres:15}
py=${PYTHON:-.venv/bin/python}
targets=${TEST_DOCKER_TARGETS:-ml_c4 rasp3b}
timeout=${TEST_DOCKER_TIMEOUT:-1200}
run=neocompile-e2e-$$
started=$(date +%s)

say() { echo "docker/test.sh: $*"; }
fail() { echo "docker/test.sh: FAILED: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 || fail "no Docker engine answers (start dockerd; see the README's container section)"
docker image inspect "$image" >/dev/null 2>&1 || fail "no image $image: build it with docker/build.sh $image"
"$py" -c 'import boto3' 2>/dev/null || fail "$py cannot import boto3 (make deps, or PYTHON=a python with boto3)"
if [ "$pg_image" = neocompile-postgres:15 ]; then
  # Built every time (from the layer cache after the first, when its Dockerfile has not changed).
  say "building $pg_image (Debian's postgresql-15 on neocompile-base:bookworm, docker/postgres-test.Dockerfile)"
  log=$(mktemp)
  docker build -q -t "$pg_image" - < docker/postgres-test.Dockerfile >"$log" 2>&1 \
    || { cat "$log" >&2; rm -f "$log"; fail "building $pg_image"; }
  rm -f "$log"
else
  docker image inspect "$pg_image" >/dev/null 2>&1 || fail "no image $pg_image"
fi

data=$(mktemp -d)
containers=("$run-postgres" "$run-server" "$run-worker-1" "$run-worker-2")
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    for c in "${containers[@]}"; do
      docker container inspect "$c" >/dev/null 2>&1 || continue
      echo "---- last lines of $c's log" >&2
      docker logs --tail 40 "$c" 2>&1 | sed 's/^/    /' >&2
    done
  fi
  if [ "${TEST_DOCKER_KEEP:-0}" = 1 ]; then
    say "kept: containers ${containers[*]}, network $run, data $data"
    return
  fi
  docker rm -f "${containers[@]}" >/dev/null 2>&1 || true
  docker network rm "$run" >/dev/null 2>&1 || true
  # The packages were written by root in the containers: remove them from a container too (host user may not be root).
  docker run --rm --network none -v "$data:/data" --entrypoint sh "$image" -c 'rm -rf /data/* /data/.[!.]*' \
    >/dev/null 2>&1 || true
  rm -rf "$data" 2>/dev/null || true
  [ "$rc" = 0 ] || echo "docker/test.sh: FAILED after $(( $(date +%s) - started )) s" >&2
}
trap cleanup EXIT

mkdir -p "$data/in"
cp examples/model.tar.gz "$data/in/model.tar.gz"
pg_password=$("$py" -c 'import secrets; print(secrets.token_hex(16))')
export NEOCOMPILE_ACCESS_KEY_ID=e2e-$("$py" -c 'import secrets; print(secrets.token_hex(6))')
export NEOCOMPILE_SECRET_ACCESS_KEY=$("$py" -c 'import secrets; print(secrets.token_hex(20))')
store=postgresql://neocompile:$pg_password@postgres:5432/neocompile

docker network create "$run" >/dev/null
say "starting PostgreSQL ($pg_image)"
docker run -d --name "$run-postgres" --network "$run" --network-alias postgres \
  -e POSTGRES_USER=neocompile -e POSTGRES_PASSWORD="$pg_password" -e POSTGRES_DB=neocompile "$pg_image" >/dev/null
for _ in $(seq 120); do
  docker exec "$run-postgres" pg_isready -q -h 127.0.0.1 -U neocompile -d neocompile && break
  sleep 0.5
done
docker exec "$run-postgres" pg_isready -q -h 127.0.0.1 -U neocompile -d neocompile \
  || fail "PostgreSQL did not accept connections within 60 s"

say "starting the server and two workers ($image)"
common=(--network "$run" --init -e NEOCOMPILE_STORE_URL="$store" -v "$data:/data")
docker run -d --name "$run-server" --hostname server "${common[@]}" -p 127.0.0.1::8080 \
  -e NEOCOMPILE_ACCESS_KEY_ID -e NEOCOMPILE_SECRET_ACCESS_KEY \
  "$image" serve --host 0.0.0.0 --port 8080 --workers 0 >/dev/null
for i in 1 2; do
  docker run -d --name "$run-worker-$i" --hostname "worker-$i" "${common[@]}" "$image" worker >/dev/null
done
port=$(docker port "$run-server" 8080/tcp | head -n1 | sed 's/.*://')
[ -n "$port" ] || fail "the server container published no port"
endpoint=http://127.0.0.1:$port

# Ready: the server answers GET /ping; each worker has opened the store and waits for jobs.
ready=
for _ in $(seq 120); do
  if "$py" -c "import urllib.request; urllib.request.urlopen('$endpoint/ping', timeout=2)" 2>/dev/null; then ready=1; break; fi
  [ "$(docker inspect -f '{{.State.Running}}' "$run-server")" = true ] || fail "the server container exited"
  sleep 0.5
done
[ -n "$ready" ] || fail "the server did not answer GET $endpoint/ping within 60 s"
for i in 1 2; do
  for _ in $(seq 120); do
    docker logs "$run-worker-$i" 2>&1 | grep "waiting for jobs" >/dev/null && break
    [ "$(docker inspect -f '{{.State.Running}}' "$run-worker-$i")" = true ] || fail "worker-$i exited"
    sleep 0.5
  done
  docker logs "$run-worker-$i" 2>&1 | grep "waiting for jobs" >/dev/null || fail "worker-$i did not start within 60 s"
done
say "server at $endpoint, workers ready after $(( $(date +%s) - started )) s; submitting jobs for: $targets"

ENDPOINT=$endpoint DATA=$data TARGETS=$targets TIMEOUT=$timeout RUN=$run "$py" - <<'EOF'
import os
import sys
import time
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from neocompile.digest import blake2b_file


def fail(msg: str) -> None:
    sys.exit(f"docker/test.sh: FAILED: {msg}")


endpoint, data, timeout, run = os.environ["ENDPOINT"], Path(os.environ["DATA"]), float(os.environ["TIMEOUT"]), os.environ["RUN"]
targets = os.environ["TARGETS"].split()
config = Config(retries={"max_attempts": 2, "mode": "standard"})


def client(secret: str):
    return boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-west-2", config=config,
                        aws_access_key_id=os.environ["NEOCOMPILE_ACCESS_KEY_ID"], aws_secret_access_key=secret)


# A request signed with the wrong secret must be refused: the server in the container checks signatures.
try:
    client("not-the-secret").list_compilation_jobs()
    fail("a request signed with a wrong secret was accepted")
except ClientError as exc:
    print(f"docker/test.sh: wrong secret refused ({exc.response['Error']['Code']})")
sm = client(os.environ["NEOCOMPILE_SECRET_ACCESS_KEY"])
names = {}
for target in targets:
    name = f"e2e-{target.replace('_', '-')}-{run.rsplit('-', 1)[1]}"
    try:
        sm.create_compilation_job(
            CompilationJobName=name, RoleArn="arn:aws:iam::123456789012:role/neocompile-e2e",
            InputConfig={"S3Uri": "file:///data/in/model.tar.gz", "Framework": "ONNX", "DataInputConfig": '{"data": [1, 3, 64, 64]}'},
            OutputConfig={"S3OutputLocation": f"file:///data/out/{target}", "TargetDevice": target},
            StoppingCondition={"MaxRuntimeInSeconds": int(timeout)})
    except ClientError as exc:
        fail(f"CreateCompilationJob {name} ({target}): {exc.response['Error']['Code']}: {exc.response['Error']['Message']}")
    names[name] = target
    print(f"docker/test.sh: created {name} ({target})")
start, done, last = time.monotonic(), {}, {}
while len(done) < len(names):
    for name in names.keys() - done.keys():
        d = sm.describe_compilation_job(CompilationJobName=name)
        status, stage = d["CompilationJobStatus"], d["ResponseMetadata"]["HTTPHeaders"].get("x-neocompile-stage", "")
        if last.get(name) != (status, stage):
            print(f"docker/test.sh: {time.monotonic() - start:6.1f} s  {name}: {status} {stage}", flush=True)
            last[name] = (status, stage)
        if status in ("COMPLETED", "FAILED", "STOPPED"):
            done[name] = d
    if time.monotonic() - start > timeout:
        fail(f"jobs still running after {timeout:.0f} s: {sorted(names.keys() - done.keys())}")
    time.sleep(1)
for name, d in done.items():
    if d["CompilationJobStatus"] != "COMPLETED":
        fail(f"{name}: {d['CompilationJobStatus']}: {d.get('FailureReason', '')}")
    uri = d["ModelArtifacts"]["S3ModelArtifacts"]
    path = uri.removeprefix("file://")
    if not path.startswith("/data/"):
        fail(f"{name}: artifact {uri} is not under the shared /data")
    local = data / path.removeprefix("/data/")
    if not local.is_file():
        fail(f"{name}: COMPLETED, but its package {uri} is not in the shared folder ({local})")
    if blake2b_file(local) != d["ModelDigests"]["ArtifactDigest"]:
        fail(f"{name}: {local} does not have the ArtifactDigest the API reported")
    print(f"docker/test.sh: {name}: COMPLETED in {(d['CompilationEndTime'] - d['CompilationStartTime']).total_seconds():.1f} s, "
          f"{uri} ({local.stat().st_size} bytes, digest matches)")
EOF

# Each worker runs one job at a time and both were idle: the two jobs must have gone to the two workers.
n=$(wc -w <<<"$targets")
if [ "$n" -ge 2 ]; then
  for i in 1 2; do
    docker logs "$run-worker-$i" 2>&1 | grep ": taken by worker-$i:" >/dev/null || fail "worker-$i ran no job (of $n submitted at once)"
  done
  say "both workers ran a job"
fi
# The image as a SageMaker inference container: a host server's worker runs `docker run IMAGE serve` for a transform.
pkg=$(find "$data" -name '*-ml_c4.tar.gz' | head -n1)
[ -n "$pkg" ] || fail "no ml_c4 package in $data for the batch-transform step (TEST_DOCKER_TARGETS must include ml_c4)"
NEOCOMPILE_FORCE_CONTAINERS=1 "$py" docker/transform_e2e.py "$image" "$pkg" "$data/transform-e2e" \
  || fail "batch transform through $image as an inference container"
say "PASSED in $(( $(date +%s) - started )) s"
