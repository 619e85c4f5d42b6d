#!/usr/bin/env bash
# Build the worker image without an image registry: a debootstrapped Debian 12 base, imported into
# Docker, plus a wheelhouse downloaded on the host. Needs root, debootstrap and a running dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-neocompile:latest}
if ! docker image inspect neocompile-base:bookworm >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian
  tar -C "$rootfs" -c . | docker import - neocompile-base:bookworm
  rm -rf "$rootfs"
fi
mkdir -p docker/wheels
python3 -m pip download -q -d docker/wheels .
docker build -f docker/Dockerfile -t "$tag" .
echo "built $tag: docker run --rm -v \$PWD:/work $tag --framework ONNX --model-uri model.tar.gz ..."
