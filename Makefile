# curvscope — the two commands a newcomer types: `make demo` and `make test`.
# Both create .venv when it is missing. TORCH_SPEC picks the torch to install
# (default: the CPU wheel this project is developed against; bring your own with
# e.g. `make test TORCH_SPEC='torch>=2.4'` or an already-installed torch in .venv). Extras are
# installed with the installed torch pinned (.venv/constraints.txt), so no dependency upgrades it.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.curvscope-installed
DOCS_STAMP := $(VENV)/.curvscope-docs-installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: help demo test docs bench lint format data clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	@$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/constraints.txt
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e ".[dev]"
	@touch $(STAMP)

data:  ## install Debian's Fashion-MNIST when possible (optional; digits ship with scikit-learn)
	@test -d $(FASHION_MNIST) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) ; } || \
	  echo "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); tests that need it are skipped"

demo: $(STAMP)  ## set up and run the built-in end-to-end analysis
	$(BIN)/curvscope demo

test: $(STAMP) data  ## set up and run the whole test suite
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e ".[docs]"
	@touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)  ## build the documentation site into site/ (mkdocs --strict: any warning fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
	@echo "open site/index.html"

bench: $(STAMP)  ## install the peers and run the side-by-side benchmarks (writes benchmarks/results/)
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e ".[dev,bench]"
	@# BackPACK pulls PyPI's torchvision, which does not import beside this torch and breaks transformers
	@$(BIN)/pip uninstall -y -q torchvision 2>/dev/null || true
	$(BIN)/python benchmarks/matvec.py
	@for b in eigen sketch first_call precision transformer monitor; do test ! -f benchmarks/$$b.py || $(BIN)/python benchmarks/$$b.py || exit 1; done
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) site .pytest_cache .ruff_cache .hypothesis src/*.egg-info
