# Two commands on a fresh machine:
#   make demo   install everything, then run the whole pipeline (three sentences -> animated avatar)
#               on the default (free, offline) stack with the cpu preset
#   make test   install everything, then run the test suite (make test-fast: without the slow tier)
#
# torch and torchvision must be a matched pair. The default pair is the one verified here; on
# your own GPU machine pass yours, e.g.
#   make demo TORCH_SPEC="torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cu124"
# or TORCH_SPEC= (empty) to keep the torch already installed in VENV.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.avatar-installed

.PHONY: install demo test test-fast lint format benchmark clean-outputs

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools<81" wheel
	$(if $(strip $(TORCH_SPEC)),$(PY) -m pip install --quiet $(TORCH_SPEC))
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -c "import torch, torchvision, torchvision.ops, lightning, clip, open_clip, anny, warp; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) train.py pipeline=full $(DEMO_ARGS)

# Tests run on TEST_WORKERS pytest-xdist workers (one thread each: tests/conftest.py); worksteal
# keeps both busy while one runs a long whole-stage test. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
PYTEST_WORKERS := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

test: install
	$(PY) -m pytest tests -q $(PYTEST_WORKERS)

# ruff (configured in pyproject.toml): lint and formatting, checked by CI; `make format` fixes both.
LINTED := avatar tests experiments benchmarks hydra_plugins train.py
lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format: install
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

# The edit loop: everything but the whole-stage runs marked `slow` (CI runs `make test`).
test-fast: install
	$(PY) -m pytest tests -q -m "not slow" $(PYTEST_WORKERS)

# The mesh renderer's timings (benchmarks/; the NeuS samplers: python -m benchmarks.benchmark_neus).
benchmark: install
	$(PY) -m benchmarks.benchmark_renderer

clean-outputs:
	rm -rf outputs multirun
