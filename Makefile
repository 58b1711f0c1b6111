# Each target creates .venv and installs the project (editable, with dev tools) when .venv is missing or older
# than pyproject.toml. LeRobot 0.6.1 needs Python 3.12: the venv is made with the first python3.12 found on PATH,
# then with pyenv's installed 3.12 versions; with none, make says what to install.
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON312 = $(shell bash tools/find-python312)

.PHONY: demo test bench bench-learn bench-model bench-bus bench-sim bench-loop bench-data bench-server fuzz lint clean

$(STAMP): pyproject.toml
	@if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then \
		echo "$(VENV) is not Python 3.12: recreating it"; rm -rf $(VENV); fi
	@test -x $(PY) || { p="$(PYTHON312)"; [ -n "$$p" ] || { echo "Python 3.12 not found: install it (e.g. 'pyenv install 3.12') or put python3.12 on PATH" >&2; exit 1; }; \
		echo "creating $(VENV) with $$p"; "$$p" -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vla demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: bench-model bench-bus bench-sim bench-loop bench-data bench-server

# not part of `make bench`: it trains several policies for minutes each (run it alone on the machine)
bench-learn: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) benchmarks/bench_learn.py

bench-model: $(STAMP)
	$(PY) benchmarks/bench_model.py

bench-bus: $(STAMP)
	$(PY) benchmarks/bench_bus.py

bench-sim: $(STAMP)
	$(PY) benchmarks/bench_sim.py

bench-loop: $(STAMP)
	$(PY) benchmarks/bench_loop.py

bench-data: $(STAMP)
	$(PY) benchmarks/bench_data.py

bench-server: $(STAMP)
	$(PY) benchmarks/bench_server.py

# Coverage-guided fuzzing (atheris) of the policy server's message decoding and the worker's pipe codec; not part
# of `make test`. FUZZ_SECONDS per harness.
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(PY) -m pip install --quiet "atheris>=2.3,<4"
	$(PY) fuzz/run.py --seconds $(FUZZ_SECONDS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) outputs .pytest_cache .mypy_cache .ruff_cache
