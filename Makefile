# pig-engine: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast check-install bench demo lint clean

# (Re)install when the venv is missing or the build inputs changed.
$(STAMP): setup.py pyproject.toml $(wildcard cpp_ext/*.cpp cpp_ext/*.h)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[export,dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q tests
	bash scripts/check_install.sh

# A user's install in fresh venvs (runtime + serve extra only) at the newest and the lowest
# versions setup.py allows: index, search, serve, tokenizer parity. MODES="newest" for one.
check-install: install
	bash scripts/check_install.sh $(MODES)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: install
	$(BIN)/python -m bench $(BENCH)

demo: install
	$(BIN)/python -m pig.demo.run

# style, the import layers (pyproject.toml), types, and the documentation site
lint: install
	$(BIN)/ruff check pig tests bench scripts
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict --quiet --site-dir $(CURDIR)/site

clean:
	rm -rf build *.egg-info pig/*.so demo_out .pytest_cache .mypy_cache site
