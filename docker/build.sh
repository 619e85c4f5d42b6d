#!/usr/bin/env bash
# Build the neocompile image (compile-model, neocompile serve, neocompile worker) without an image registry: a
# debootstrapped Debian 12 base imported into Docker, plus a wheelhouse downloaded on the host (pip inside a build
# may not get through a TLS-inspecting proxy). Needs root, debootstrap and a running dockerd.
#   docker/build.sh [TAG]        default TAG: neocompile:latest
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-neocompile:latest}
base=neocompile-base:bookworm
if ! docker image inspect "$base" >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "docker/build.sh: debootstrap bookworm (about 2 minutes)"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  tar -C "$rootfs" -c . | docker import - "$base"
fi
py=$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
[ "$py" = 311 ] || { echo "docker/build.sh: needs the host's python3 to be 3.11 (the image's Python), found $py"; exit 1; }
mkdir -p docker/wheels
echo "docker/build.sh: wheelhouse"
python3 -m pip download -q -d docker/wheels '.[pytorch,tensorflow,xgboost,postgres]' 'setuptools>=68' 2>&1 | grep -v '^WARNING: Location' || true
# The aarch64 TVM runtime is taken from PyPI's aarch64 wheels: put them in the wheelhouse too, so the image
# can fill its runtime cache without network.
tvm=$(sed -n 's/.*"apache-tvm==\([^"]*\)".*/\1/p' pyproject.toml)
ffi=$(sed -n 's/.*"apache-tvm-ffi==\([^"]*\)".*/\1/p' pyproject.toml)
python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 --python-version 3.11 \
  -d docker/wheels "apache-tvm==$tvm" "apache-tvm-ffi==$ffi" 2>&1 | grep -v '^WARNING: Location' || true
# The build context is only what the image needs, streamed as a tar: the checkout also holds virtualenvs and
# benchmark models (gigabytes) that `docker build .` would send to the daemon.
tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md neocompile targets \
    docker/Dockerfile docker/entrypoint.sh docker/wheels \
  | docker build -f docker/Dockerfile -t "$tag" -
echo "built $tag; try: docker run --rm -v \$PWD:/work $tag --framework ONNX --model-uri examples/model.tar.gz \\"
echo "    --data-input-config '{\"data\":[1,3,64,64]}' --target-device rasp3b --output-location /work/out"
echo "  or the job service: docker/compose.yaml (server + PostgreSQL + two workers); make test-docker runs a job through it"
