# torchport developer tasks. `make setup` builds .venv from nothing; `make test` runs the test suite.
VENV   ?= .venv
PYTHON ?= python3
# torch is not pinned by the package; this picks the small CPU build for development machines without a
# GPU. On a GPU machine: make setup TORCH=torch
TORCH  ?= torch==2.13.0

.PHONY: setup test clean

setup:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q "$(TORCH)" -e '.[dev]'
	cd examples/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error

test:
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) bundles .pytest_cache .hypothesis *.egg-info examples/node/node_modules
