# The two set-up commands of the README are `make book` and `make test`;
# both create .venv on first use. Everything else is an extra.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv book lint test test-slow mutation site-test gpu-test bench bench-sweep clean

# Reinstall when the pins or the package metadata change.
$(VENV)/installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	touch $@

venv: $(VENV)/installed

# The website, into _build/html: every page re-read and every notebook executed afresh
# (--all: Sphinx would skip unchanged pages even when xentlib changed), any warning an error.
# The xentlib wheel comes first: the site offers it for download (offline: no build isolation).
book: $(VENV)/installed
	rm -rf _build/wheel
	$(BIN)/python -m build --no-isolation --wheel --outdir _build/wheel . >/dev/null
	$(BIN)/jupyter-book build . --all -W -n --keep-going

# The public modules, whose docstrings numpydoc validates (settings in pyproject.toml).
PUBLIC := xentlib/__init__.py xentlib/softmax.py xentlib/loss.py xentlib/linear.py \
	xentlib/sharded.py xentlib/gradcheck.py xentlib/naive.py xentlib/_namespace.py

# The library's hygiene (lint, docstrings, types; settings in pyproject.toml).
lint: $(VENV)/installed
	$(BIN)/ruff check .
	$(BIN)/python -m numpydoc lint $(PUBLIC)
	$(BIN)/mypy

# Lint, the CI workflow against its schema (offline), then package tests, doctests and
# every chapter under nbval (settings in pyproject.toml).
test: lint
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/book.yml
	$(BIN)/python -m pytest -n 2 --dist loadfile

# Every hypothesis property at 3000 examples, up to 50000 classes, blocked and not
# (about 4 minutes on two cores).
test-slow: $(VENV)/installed
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -m slow tests

# Each of tools/mutate.py's single-line mistakes planted in a copy of the package,
# tests/ run once per mistake (no nbval): about 20 minutes on two cores.
mutation: $(VENV)/installed
	$(BIN)/python tools/mutate.py

# The built site in Debian's Chromium (apt-get install chromium): every page of the
# table of contents loads, renders its math, stays on the local server; screenshots
# go to _build/screenshots/.
site-test: book
	$(BIN)/python -m pytest -m site tests/site -p no:xdist

# On a CUDA machine after `pip install -r requirements-gpu.txt`: the CuPy half of the tests
# and every chapter on the GPU.
gpu-test: $(VENV)/installed
	$(BIN)/python -m pytest -m gpu tests
	XENTLIB_BACKEND=cupy $(BIN)/python -m pytest book

# Timings and peak memory against torch (when installed), NumPy and SciPy: about 4 minutes and
# 1.4 GiB of memory on two cores. Writes bench.json and bench.png into _build/bench.
bench: $(VENV)/installed
	$(BIN)/python -m xentlib.bench --out _build/bench

# Time per logit of xentlib, torch (when installed) and whole-array NumPy, loss and loss +
# gradient, from N*C = 10^2 to 10^8 at C = 10, 1000 and 32768: about 2 minutes on two
# cores and 3.1 GiB of memory at its peak. Writes sweep.json and sweep.png into _build/bench.
bench-sweep: $(VENV)/installed
	$(BIN)/python -m xentlib.bench --sweep --out _build/bench

clean:
	rm -rf _build
