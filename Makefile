# Each target creates .venv and installs the project (editable, with dev tools) when .venv is missing or older
# than pyproject.toml.
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-model bench-bus bench-sim bench-loop bench-data bench-server lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vla demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: bench-model bench-bus bench-sim bench-loop bench-data bench-server

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

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) outputs .pytest_cache .mypy_cache .ruff_cache
