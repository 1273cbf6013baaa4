# The README's commands. `make demo` and `make test` each do all set-up first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench docker-setup clean fidelity

$(BIN)/gpuserve: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/gpuserve

setup: $(BIN)/gpuserve

demo: setup
	$(BIN)/gpuserve simulate scenarios/quickstart.yaml --out out/quickstart

test: setup
	$(BIN)/ruff check gpuserve tests bench sim
	$(BIN)/mypy --strict gpuserve
	$(BIN)/lint-imports
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check gpuserve tests bench sim
	$(BIN)/mypy --strict gpuserve
	$(BIN)/lint-imports

docker-setup:
	bash scripts/docker-setup.sh

bench: setup
	$(BIN)/python bench/sim_throughput.py

# FIDELITY.md: simulator vs Erlang C, vs SimFaaS, vs the live platform (about 15 minutes)
fidelity: setup
	$(BIN)/python sim/fidelity_report.py

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
