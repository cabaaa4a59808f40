# pantry — the commands a user runs. `make demo` and `make test` set themselves up.
SHELL := /bin/bash
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
UNTIL ?=
USERS ?= 20
RATE ?= 100
DURATION ?= 60s
SIMULATE ?=
CUTS ?= 2017-09-01,2017-10-01,2017-11-01,2017-11-26
CASES ?= 2000
export PYTHONUNBUFFERED := 1

.PHONY: setup demo serve test bench chaos load lint evaluate evaluate-served clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@echo "==> creating $(VENV) with $(PYTHON_BOOT)"
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	@test -x $(UV) || $(VENV)/bin/pip install -q --disable-pip-version-check "uv==$$(sed -nE 's/^uv==([^ ]+).*/\1/p' requirements.lock)"
	@# bytecode now, once: where PYTHONDONTWRITEBYTECODE is set, every process would compile its imports again
	$(UV) pip sync -q --require-hashes --compile-bytecode --python $(PY) requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || test -n "$$PANTRY_CHROMIUM" || \
		{ echo "==> installing Chromium (the console's browser tests)"; \
		  $$(test "$$(id -u)" = 0 || echo sudo) apt-get install -y -q chromium >/dev/null; }
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/pantry demo $(if $(UNTIL),--until $(UNTIL),)

serve: setup
	$(VENV)/bin/pantry serve

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m load_tests.bench

chaos: setup
	$(PY) -m load_tests.chaos

load: setup
	$(VENV)/bin/pantry load --users $(USERS) --rate $(RATE) --duration $(DURATION) $(if $(SIMULATE),--simulate,)

evaluate: setup
	$(VENV)/bin/pantry evaluate

# a `pantry demo --until CUT` per cut (own data dir, port, Redis), asked over HTTP; docs/MODEL_REPORT.md's served section
evaluate-served: setup
	$(VENV)/bin/pantry evaluate-served --cuts $(CUTS) --cases $(CASES)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	-$(VENV)/bin/pantry redis stop 2>/dev/null
	rm -rf .pantry artifacts .pytest_cache .ruff_cache
