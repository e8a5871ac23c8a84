# The two commands of the README: `make demo` (the main job) and `make test`.
# Both build .venv on first use from the committed locks in requirements/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCKS := requirements/cpu.lock.txt requirements/torchrec.lock.txt requirements/dev.lock.txt pyproject.toml

.PHONY: venv test test-fast demo bench clean

venv: $(STAMP)

$(STAMP): $(LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/cpu.lock.txt -r requirements/dev.lock.txt
	$(PY) -m pip install -q --no-deps -r requirements/torchrec.lock.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Every test, the slow end-to-end ones included (CI runs exactly this).
test: venv
	$(PY) -m pytest -q tests

# Only the fast tests, for the edit-run loop.
test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests

demo: venv
	$(VENV)/bin/dfgr demo

bench: venv
	$(VENV)/bin/dfgr bench attention --json outputs/bench_attention.json

clean:
	rm -rf $(VENV) outputs runs .pytest_cache
