# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit lint bench clean

# The serving packages are held at the versions the Lambda layer ships (layers/requirements.txt, its extras
# stripped: pip takes none in a constraints file), so the tests run what deploys.
$(STAMP): pyproject.toml layers/requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Towerlight needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	sed 's/\[[^]]*\]//' layers/requirements.txt > $(VENV)/layer-constraints.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/layer-constraints.txt -e ".[offline,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/towerlight demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check layers offline functions tests
	$(BIN)/ruff format --check layers offline functions tests

bench: $(STAMP)
	$(BIN)/towerlight bench serve
	$(BIN)/towerlight bench ingest

clean:
	rm -rf $(VENV) .venv-sam .pytest_cache .ruff_cache .aws-sam
