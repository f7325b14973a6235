# The two commands: `make demo` runs the whole pipeline on the default recipe; `make test` runs the tests.
# Both do their own set-up: a virtualenv in .venv, the Python dependencies, and (as root, or with
# sudo) the Debian packages the data and the end-to-end tests need.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RECIPE ?= models/mobilenet_v2_fashion.toml
DEMO_OUT ?= runs/demo
DEBS_DEMO := dataset-fashion-mnist
DEBS_TEST := dataset-fashion-mnist openssh-server openssh-client adb chromium
PYTEST_ARGS ?=

.PHONY: setup demo test sysdeps-demo sysdeps-test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

sysdeps-demo:
	@bash scripts/sysdeps.sh $(DEBS_DEMO)

sysdeps-test:
	@bash scripts/sysdeps.sh $(DEBS_TEST)

demo: setup sysdeps-demo
	$(VENV)/bin/edgeprune run $(RECIPE) --out $(DEMO_OUT) --force

test: setup sysdeps-test
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup sysdeps-demo
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
