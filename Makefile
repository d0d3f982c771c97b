# hostd: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean native

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo needs only hostd's runtime dependencies, not the dev tools `make test` installs.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e .
	touch $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(PY) plugins/demo.py

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check hostd tests plugins bench
	$(VENV)/bin/ruff format --check hostd tests plugins bench
	$(VENV)/bin/mypy

# A native plugin to try `hostd run --native` with (the worker tests' C plugin, built from source).
native:
	mkdir -p build/native
	cc -shared -fPIC -pthread -O2 -o build/native/native-test.so tests/native/testplugin.c

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench

# hostd-bridge.so (PROTOCOL §15): C11, libc and pthread only. `make bridge HOSTD=/path/to/hostd`
# compiles in the hostd used when neither $HOSTD_BIN nor PATH names one. Always rebuilt (HOSTD may change).
CC     ?= cc
HOSTD  ?=
.PHONY: bridge
bridge:
	mkdir -p build
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror -fPIC -shared $(if $(HOSTD),-DHOSTD_DEFAULT_PATH='"$(HOSTD)"') \
		-o build/hostd-bridge.so hostd/bridge/hostd_bridge.c -lpthread

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
