# neocompile: every set-up step lives here. `make run` and `make test` install what they need on a fresh
# Debian machine (apt packages, a virtualenv with pinned wheels) and are no-ops the second time.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# The tests' side virtualenv with the real mxnet (1.9.1 needs numpy < 1.24, so never beside neocompile): it writes
# MXNet checkpoints and mxnet's own outputs for tests/loaders/test_mxnet.py (tests/mxnet_gen.py).
MXNET_VENV := .venv-mxnet
BIN := $(VENV)/bin
STAMPS := .stamps
# binutils-*: the cross objdumps with which `make bench` counts NEON instructions in ARM packages.
# libgomp1, libquadmath0: what mxnet 1.9.1's libmxnet.so links against (the test-only side virtualenv below).
# postgresql: the server binaries (initdb, pg_ctl) of the throwaway cluster the job-store tests start (tests/service/pg.py).
APT_PACKAGES := g++ binutils binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf libc6-arm64-cross libc6-armhf-cross \
  qemu-user debootstrap libgomp1 libquadmath0 postgresql
OUT ?= out
EXAMPLE := examples/model.tar.gz
CROSS_TARGET ?= rasp3b
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: all deps run test bench targets docker test-docker clean distclean

all: test

$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "pip: installing neocompile and its pinned dependencies into $(VENV) (first run: a few minutes)"
	@set -o pipefail; $(BIN)/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	@$(BIN)/python -c "import tvm, onnx, onnxruntime, torch, boto3, neocompile" && test -x $(BIN)/weed \
	  || { echo "dependency install failed: see the pip output above"; exit 1; }
	@touch $@

deps: $(STAMPS)/venv

$(STAMPS)/mxnet-venv: $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@test -x $(MXNET_VENV)/bin/python || $(PYTHON) -m venv $(MXNET_VENV)
	@echo "pip: installing mxnet 1.9.1 and numpy 1.23.5 into $(MXNET_VENV) (test-only side environment)"
	@set -o pipefail; $(MXNET_VENV)/bin/pip install -q --disable-pip-version-check mxnet==1.9.1 numpy==1.23.5 2>&1 \
	  | { grep -v "^WARNING: Location" || true; }
	@$(MXNET_VENV)/bin/python -c "import mxnet; mxnet.nd.ones((1,)).asnumpy()" \
	  || { echo "mxnet side environment install failed: see the pip output above"; exit 1; }
	@touch $@

# Compile the bundled example for the best registry device this CPU runs natively and for one cross
# target, then run the host package and print its outputs.
run: deps
	@host=$$($(BIN)/neocompile targets --native | head -n1); \
	test -n "$$host" || { echo "no registry device runs natively on this CPU"; exit 1; }; \
	echo "== compile $(EXAMPLE) for $$host (this machine) and $(CROSS_TARGET) (cross)"; \
	for t in $$host $(CROSS_TARGET); do \
	  $(BIN)/compile-model --framework ONNX --model-uri $(EXAMPLE) --data-input-config '{"data":[1,3,64,64]}' \
	    --target-device $$t --output-location $(OUT) || exit 1; \
	done; \
	echo "== run $(OUT)/model-$$host.tar.gz"; \
	$(BIN)/neocompile run $(OUT)/model-$$host.tar.gz && \
	echo "== on the device: the package alone (bin/neo_run and python/neocompile_rt.py over its C API)" && \
	rm -rf $(OUT)/pkg-$$host && mkdir -p $(OUT)/pkg-$$host && tar -xzf $(OUT)/model-$$host.tar.gz -C $(OUT)/pkg-$$host && \
	$(OUT)/pkg-$$host/bin/neo_run --repeat 50 $(OUT)/pkg-$$host && \
	$(BIN)/python -c "import sys, numpy as np; sys.path.insert(0, sys.argv[1] + '/python'); from neocompile_rt import Model; \
	m = Model(); y = m.run(np.zeros(m.input_shapes['data'], 'float32'))[0]; \
	print('neocompile_rt:', m.get_version(), m.input_names, '->', m.output_names, y.shape, 'tvm loaded:', 'tvm' in sys.modules)" \
	  $(OUT)/pkg-$$host && \
	echo "== the job API: neocompile serve, the example through boto3 (examples/serve_demo.py)" && \
	$(BIN)/python examples/serve_demo.py $(OUT) $$host

test: deps $(STAMPS)/mxnet-venv
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The benchmark's extra (matplotlib for the chart) on top of the test dependencies (torch).
$(STAMPS)/bench: pyproject.toml $(STAMPS)/venv
	@set -o pipefail; $(BIN)/pip install -q --disable-pip-version-check -e '.[test,bench]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	@$(BIN)/python -c "import matplotlib" || { echo "matplotlib install failed: see the pip output above"; exit 1; }
	@touch $@

# The full run takes hours on a small machine; BENCH_ARGS=--quick for a short one (bench/bench.py --help).
bench: $(STAMPS)/bench
	@$(BIN)/python bench/bench.py $(BENCH_ARGS)

targets: deps
	@$(BIN)/neocompile targets

# Build the worker image (needs root, debootstrap and a running dockerd) and compile the example in it, offline.
docker:
	@bash docker/build.sh neocompile:latest
	@docker run --rm --network none -v "$$PWD:/work" neocompile:latest --framework ONNX --model-uri $(EXAMPLE) \
	  --data-input-config '{"data":[1,3,64,64]}' --target-device $(CROSS_TARGET) --output-location /work/$(OUT)

# The job service end to end in containers (docker/test.sh): build the image, start PostgreSQL, `neocompile serve` and
# two `neocompile worker` containers on a docker network, compile the example for ml_c4 and rasp3b through the API
# with boto3 from .venv, check the packages in the shared bind mount, remove everything. Needs root, debootstrap and a
# running dockerd; CI does not run it (no Docker engine or image registry on CI machines).
test-docker: deps
	@bash docker/build.sh neocompile:latest
	@PYTHON=$(BIN)/python bash docker/test.sh

clean:
	rm -rf $(OUT) bench/work .pytest_cache

distclean: clean
	rm -rf $(VENV) $(MXNET_VENV) $(STAMPS) *.egg-info
