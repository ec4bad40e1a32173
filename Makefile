# torchport developer tasks. `make setup` builds .venv from nothing; `make test` runs the fast tier of the
# tests (the everyday command), `make test-all` every test (what CI runs); tests/conftest.py says which is which.
VENV   ?= .venv
PYTHON ?= python3
# torch is not pinned by the package; this picks the small CPU build for development machines without a
# GPU. On a GPU machine: make setup TORCH=torch
TORCH  ?= torch==2.13.0

# The browser tests drive Debian's Chromium (Playwright's own browser downloads are not used).
BROWSER_PACKAGES ?= chromium fonts-liberation
# tests/test_publish.py kills runs at each of their renames with strace's fault injection.
TEST_PACKAGES ?= strace

.PHONY: setup browser test test-all clean

setup: browser
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q "$(TORCH)" -e '.[dev]'
	cd examples/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error
	cd examples/web && npm ci --no-audit --no-fund --loglevel=error

# Chromium for tests/test_browser.py and strace for tests/test_publish.py: installed with apt-get when run as
# root (as CI is), else say how.
browser:
	@if command -v chromium >/dev/null && command -v strace >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) $(TEST_PACKAGES); \
	else echo "Chromium or strace is not installed: sudo apt-get install $(BROWSER_PACKAGES) $(TEST_PACKAGES) (the browser and publishing tests skip without them)"; fi

test:
	$(VENV)/bin/python -m pytest -q

test-all:
	$(VENV)/bin/python -m pytest -q --full

clean:
	rm -rf $(VENV) bundles .pytest_cache .hypothesis *.egg-info examples/node/node_modules examples/web/node_modules
