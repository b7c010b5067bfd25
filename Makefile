# Two entry points (see README): `make demo` and `make test`. Both create .venv/ on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build here; a CUDA machine that already has torch>=2.11 in the venv keeps its own.
TORCH_VERSION ?= 2.13.0
EXTRAS ?= live,aws,k8s,postgres,hf,serve,track,dev

.PHONY: setup demo test ui clean device-wheels

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Tenali needs Python 3.11 or newer: set PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/pip install --disable-pip-version-check -q "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --disable-pip-version-check -q -e ".[$(EXTRAS)]"
	touch $@

demo: setup
	$(BIN)/tenali demo

ui: setup
	$(BIN)/tenali ui

test: setup
	$(BIN)/python -m pytest -q

# The server's packages as wheels for a lent GPU machine (Python 3.12, x86_64, no network there), which
# has its own torch and transformers: carried in var/device-wheels for bench/device_checks.sh (the serve extra's
# pins, which bench_decode and bench_serve import, and httpx, bench_serve's client; test_bench_mfu.py checks the list).
device-wheels:
	$(PYTHON) -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.12 \
	  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
	  -d var/device-wheels "fastapi==0.165.0" "uvicorn==0.54.0" "prometheus-client==0.26.0" "httpx==0.28.1"

clean:
	rm -rf var
