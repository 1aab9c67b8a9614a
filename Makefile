# The course's commands. A fresh machine needs only Python >= 3.10 and make:
#   make lab    create .venv (once), install everything pinned, open JupyterLab on notebooks/
#   make test   the same set-up, then every test (unit tests and notebooks)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# extra arguments: `make lab LAB_ARGS=--no-browser`, `make test PYTEST_ARGS='-k dpo'`,
# `make setup PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple'`
LAB_ARGS ?=
PYTEST_ARGS ?=
PIP_ARGS ?=
TEST_WORKERS ?= 2
TEST_TIMEOUT ?= 600

# only directories that hold notebooks go to nbval: an empty one would collect nothing
NOTEBOOK_DIRS := $(sort $(dir $(wildcard notebooks/*.ipynb solutions/*.ipynb)))

.DEFAULT_GOAL := help
.PHONY: help setup lab test artifacts bench clean

help:
	@echo "make lab        set up .venv if needed and open JupyterLab on notebooks/  (LAB_ARGS=...)"
	@echo "make test       set up .venv if needed and run every test, notebooks included  (PYTEST_ARGS=...)"
	@echo "make setup      create .venv and install the pinned dependencies (PYTHON=$(PYTHON); a no-op when up to date)"
	@echo "make artifacts  rebuild the committed artifacts (reference model, preference set, reward model, enumerable views) from their seeds"
	@echo "make bench      measure the benchmark figures; print a table and write bench.json"
	@echo "make exercises  regenerate notebooks/NN-*-exercises.ipynb from solutions/NN-*-solutions.ipynb"
	@echo "make notebooks  re-execute lessons and solutions in place, then regenerate the exercises"
	@echo "make clean      remove .venv and bench.json"

setup: $(STAMP)

# the stamp is rebuilt (pip install, fast when nothing changed) whenever the dependencies change
$(STAMP): pyproject.toml constraints.txt
	@py="$(BIN)/python"; [ -x "$$py" ] || py="$(PYTHON)"; \
	if ! "$$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then \
		ver=$$("$$py" -c 'import sys; print("Python %d.%d" % sys.version_info[:2])' 2>/dev/null) || ver="not a working Python"; \
		echo "error: the course needs Python >= 3.10, and '$$py' is $$ver." >&2; \
		echo "       Install a newer Python and run e.g. 'make setup PYTHON=python3.12' (after 'make clean')." >&2; \
		exit 1; \
	fi
	@if [ ! -x "$(BIN)/python" ]; then \
		echo "$(PYTHON) -m venv $(VENV)"; \
		$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
			echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu install the python3-venv package." >&2; \
			exit 1; }; \
	fi
	$(BIN)/pip install $(PIP_ARGS) -c constraints.txt -e '.[dev]'
	@touch $@

# JupyterLab with the course's own settings: lab/overrides.json turns off the news prompt and the update check
# (JupyterLab's defaults ask, then fetch a feed from the internet), and the server fetches no news or updates either
LAB_SETTINGS := "--LabApp.app_settings_dir=$(CURDIR)/lab" --LabApp.news_url=None \
	--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate

lab: setup
	$(BIN)/jupyter lab notebooks/ $(LAB_SETTINGS) $(LAB_ARGS)

# one pytest run over tests/ and the notebook directories, so a directory that collects nothing cannot pass
# unnoticed (exit code 5); one torch thread per xdist worker; each notebook stays on one worker (loadfile)
test: setup
	HELPERS_QUIET=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest \
		-n $(TEST_WORKERS) --dist loadfile -p no:cacheprovider --timeout=$(TEST_TIMEOUT) \
		tests/ $(if $(NOTEBOOK_DIRS),--nbval-lax --nbval-current-env $(NOTEBOOK_DIRS)) $(PYTEST_ARGS)

artifacts: setup
	$(BIN)/python -m helpers pretrain
	$(BIN)/python -m helpers build preferences
	$(BIN)/python -m helpers build reward-model
	$(BIN)/python -m helpers build views
	$(BIN)/python -m helpers build dpo-beta-sweep
	$(BIN)/python -m helpers build surprise-ablation
	$(BIN)/python -m helpers build sycophancy
	$(BIN)/python -m helpers build ppo-ablation
	$(BIN)/python -m helpers build comparison
	$(BIN)/python -m helpers build verifiable
	$(BIN)/python -m helpers build clinic
	$(BIN)/python -m helpers build combinations
	$(BIN)/python -m helpers build pipeline

bench: setup
	$(BIN)/python -m helpers bench

clean:
	rm -rf $(VENV) bench.json

# exercise notebooks are generated, never edited: solutions/NN-topic-solutions.ipynb is the one source
# (helpers/assignments/exercises.py); `make notebooks` re-executes the lessons and the solutions in place (nbclient, fresh
# kernels, progress bars off), then regenerates the exercise notebooks from the fresh solutions
.PHONY: exercises notebooks

exercises: setup
	$(BIN)/python -m helpers exercises

notebooks: setup
	$(BIN)/python -m helpers exercises --execute
