# Fresh-machine entry points: `make study` (the main job) and `make test` (the fast suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The laplace-torch peer and what it needs, installed without dependencies: laplace-torch and
# backpack-for-pytorch require torchvision, which would pull a multi-GB CUDA torch over the CPU wheel.
PEERS := laplace-torch==0.3 curvlinops-for-pytorch==3.0.1 backpack-for-pytorch==1.7.1 asdfghjkl==0.1a4 \
	einops==0.8.2 unfoldNd==0.2.3 einconv==0.1.0 linear_operator==0.6.1 opt-einsum==3.4.0 \
	torchmetrics==1.9.0 lightning-utilities==0.15.3 jaxtyping==0.3.11 wadler-lindig==0.1.8

$(BIN)/bzoo: pyproject.toml Makefile constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0   # the CPU wheel; an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'   # known-good versions (constraints.txt)
	$(MAKE) peers
	touch $@

install: $(BIN)/bzoo

# The peers' packages into .venv (part of install; run it alone to add them to an existing .venv).
peers:
	$(BIN)/pip install -q --no-deps $(PEERS)
	$(BIN)/python -c "import laplace, torch, importlib.metadata as m; print('laplace-torch', m.version('laplace-torch'), 'beside torch', torch.__version__)"

study: install
	$(BIN)/bzoo study --overwrite --jobs 2

test: install
	$(BIN)/python -m pytest

# The committed sweep's report from its cells alone (results/sweep/, docs/sweep.md); the cells grow with
# `bzoo study --datasets all --seeds 0,1,2 --sweep --jobs 2 --out results/sweep` (docs/study.md).
sweep-report: install
	$(BIN)/bzoo study --report-only --out results/sweep
	$(BIN)/bzoo study --report-only --out results/main
	$(BIN)/bzoo study --report-only --out results/near-ood
	$(BIN)/bzoo study --report-only --out results/reference-arm
	$(BIN)/python -m zoo.study.pages results/sweep docs results/main results/near-ood results/reference-arm

test-slow: install
	$(BIN)/python -m pytest -m slow

# The slow tests CI runs after `make test` (marked `correctness`: closed forms against conjugate posteriors, accuracy
# on ItalyPowerDemand), chosen by their measured time: 4 minutes in all on this 2-core machine (2026-12-07). The
# other slow tests (`make test-slow`) took over 40 minutes together.
test-correctness: install
	$(BIN)/python -m pytest -m "slow and correctness"

# The documentation site into build/site/ (`mkdocs build --strict`: any warning, broken link or anchor, page left
# out of the nav or missing API object fails it). mkdocstrings reads the docstrings from the source without
# importing it, so the site needs only these packages, put into .venv on first use (an environment that has them:
# `make docs VENV=/path/to/venv`).
DOCS := mkdocs==1.6.1 mkdocs-material==9.8.2 mkdocstrings==1.0.8 mkdocstrings-python==2.0.11 pymdown-extensions==13.1.2

$(BIN)/mkdocs:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(DOCS)

docs: $(BIN)/mkdocs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

.PHONY: install peers study test test-slow test-correctness docs sweep-report
