# The two commands of the README: `make demo` (the main job) and `make test`.
# Both build .venv on first use from the committed locks in requirements/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCKS := requirements/cpu.lock.txt requirements/torchrec.lock.txt requirements/dev.lock.txt pyproject.toml

.PHONY: venv test test-fast lint demo demo-synthetic bench gpu-check docs clean

venv: $(STAMP)

$(STAMP): $(LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/cpu.lock.txt -r requirements/dev.lock.txt
	$(PY) -m pip install -q --no-deps -r requirements/torchrec.lock.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Every test, the slow end-to-end ones included (CI runs exactly this), after the lint.
test: lint
	$(PY) -m pytest -q --durations=15 tests

# ruff: the lint rules and the formatter of pyproject.toml (`ruff format .` fixes the format).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Only the fast tests, for the edit-run loop.
test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests

# The main job: MovieLens-1M downloaded and prepared, DFGR trained through TorchX with 2 processes
# (sharded embeddings, data-parallel dual-flow layers), evaluated on each user's last 10 ratings.
demo: venv
	$(VENV)/bin/dfgr data prepare --config configs/data/movielens-1m.yaml > /dev/null
	rm -rf runs/demo-movielens
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/torchx run -s local_cwd ./launch/dfgr.py:train \
		--config configs/train/dfgr_movielens.yaml -j 1x2 name=demo-movielens
	$(PY) -m dfgr_torchrec.recipes.report runs/demo-movielens/metrics_final.json

# The quick synthetic demo (no download): DFGR and MetaGR on generated sequences.
demo-synthetic: venv
	$(VENV)/bin/dfgr demo

bench: venv
	$(VENV)/bin/dfgr bench attention --json outputs/bench_attention.json
	$(VENV)/bin/dfgr bench serving --json outputs/bench_serving.json

# The results pages from the committed results/, then the docs site into site/
docs: venv
	$(VENV)/bin/dfgr report-docs --out docs/results
	$(VENV)/bin/mkdocs build --strict

# The one GPU check (docs/benchmarks.md "Running the GPU check"): on a CUDA machine with torch (+ triton) alone,
# no venv needed; without CUDA it says so and exits 2. Uses .venv's python when there is one.
GPU_PY := $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	$(GPU_PY) -m dfgr_torchrec.bench.gpu --json results/bench/gpu/gpu_check.json

clean:
	rm -rf $(VENV) outputs runs .pytest_cache site
