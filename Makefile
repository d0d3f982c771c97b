# hostd: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean native

# hostd/_scan.c and hostd/_logline.c are compiled by the install (an editable install builds
# them in place): an edit to either reinstalls, so `make test` never runs a stale module.
$(STAMP): pyproject.toml hostd/_scan.c hostd/_logline.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo needs only hostd's runtime dependencies, not the dev tools `make test` installs.
$(VENV)/.runtime: pyproject.toml hostd/_scan.c hostd/_logline.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e .
	touch $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(PY) plugins/demo.py

# The suite runs once per event loop (every hostd it starts uses that loop): they fail differently.
# The second pass leaves out the modules that start no hostd whose loop matters (tests/conftest.py).
test: $(STAMP)
	$(PY) -m pytest --loop asyncio $(PYTEST_ARGS)
	$(PY) -m pytest --loop uvloop -m "not loop_independent" $(PYTEST_ARGS)

# The hostile-input suite at full size: FUZZ_EXAMPLES per event loop (CI runs a bounded,
# derandomized profile), split over its properties; prints the examples run per property.
FUZZ_EXAMPLES ?= 20000
.PHONY: fuzz
fuzz: $(STAMP)
	@set -e; for loop in $(LOOPS); do echo "== fuzz --loop $$loop ($(FUZZ_EXAMPLES) examples)"; \
		HOSTD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_hostile_fuzz.py --loop $$loop -q -s; done

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

# Production install (docs/operations.md): a venv at PREFIX with hostd installed from SOURCE
# (this tree, or a wheel: SOURCE=dist/hostd-*.whl), not editable, with the fast extra; the
# systemd units with ExecStart pointed at it; an example config (an existing one is kept).
# `make install-system PREFIX=/opt/hostd` as root.
PREFIX    ?= /opt/hostd
UNITDIR   ?= /etc/systemd/system
ETCDIR    ?= /etc/hostd
PIP_FLAGS ?=
SOURCE    ?= .
.PHONY: install-system
install-system:
	$(PYTHON) -m venv $(PREFIX)
	$(PREFIX)/bin/pip install -q $(PIP_FLAGS) '$(SOURCE)[fast]'
	install -d $(UNITDIR) $(ETCDIR)/plugins $(PREFIX)/share/hostd
	for f in docs/systemd/*.service docs/systemd/*.socket; do \
		sed 's#/opt/hostd/bin/hostd#$(PREFIX)/bin/hostd#g; s#/etc/hostd/#$(ETCDIR)/#g' $$f > $(UNITDIR)/$$(basename $$f); \
	done
	install -m 0644 docs/systemd/hostd.tmpfiles docs/systemd/*.example $(PREFIX)/share/hostd/
	[ -e $(ETCDIR)/hostd.toml ] || install -m 0644 docs/systemd/hostd.toml $(ETCDIR)/hostd.toml
	@echo "installed $(PREFIX)/bin/hostd; next: systemctl daemon-reload && systemctl enable --now hostd.service"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
