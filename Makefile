# Build the saliency book and run its tests.  `make help` lists the targets.
#
# make book    executes the stale notebooks (papermill, params/$(PROFILE).yaml) into
#              book/sections/ and renders them into book/_build/html (Jupyter Book, -W).
#              `make -j2 book` runs independent notebooks side by side (the benchmarks last, alone).
# make test    the whole suite: unit tests, smoke runs of every notebook, book build.
# make lab     JupyterLab on the project's kernel; `make sweep` and `make chapter` for new experiments.
#              Interactive runs and sweeps write to build/interactive/ only: book/sections/ changes
#              only through `make book`.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DELETE_ON_ERROR:
.SUFFIXES:
MAKEFLAGS += --no-builtin-rules
.DEFAULT_GOAL := help

PROFILE ?= quick
PYTHON ?= python3
SALIENCY_DATA ?=

VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.stamp
# Installed first and alone: on the project's machines pip finds these on local disk; in any
# other order it may try to download a CUDA build. Keep in sync with pyproject.toml.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
SECTIONS := $(patsubst notebooks/%,book/sections/%,$(NOTEBOOKS))
LIB_SOURCES := $(shell find lib -name '*.py' 2>/dev/null)
LIB_FILES := $(shell find lib -type f -not -path '*/__pycache__/*' 2>/dev/null)
PARAMS := params/$(PROFILE).yaml
BOOK_SOURCES := $(shell find book \( -path book/_build -o -path book/sections \) -prune -o -type f -not -name '.*' -print 2>/dev/null)
HTML_INDEX := book/_build/html/index.html

# Content stamps: rewritten only when their content changes, so their mtime says "changed".
# What the executed notebooks depend on besides files: the profile and the data root
# ($SALIENCY_DATA, else ./data, whose imagenet-val/ and coco128/ the notebooks use when there).
PROFILE_STAMP := book/sections/.profile
PROFILE_STAMP_TEXT := profile=$(PROFILE) SALIENCY_DATA=$(SALIENCY_DATA) data/imagenet-val=$(if $(wildcard data/imagenet-val),present,absent) data/coco128=$(if $(wildcard data/coco128),present,absent)
# Which notebooks the book has (adding or removing one rebuilds the table of contents).
TOC_STAMP := book/sections/.notebooks
TOC_STAMP_TEXT := $(NOTEBOOKS)

.PHONY: help venv book sections check-notebooks check-book chromium test test-fast bench readme lab sweep chapter clean FORCE

help: ## Show this help
	@echo "Usage: make TARGET [PROFILE=smoke|quick|full]   (PROFILE defaults to quick)"
	@echo
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

venv: $(VENV_STAMP) ## Create .venv and install the project with its book and test extras

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) -m pip install -e '.[book,test,browser]'
	touch $@

book: $(HTML_INDEX) ## Execute stale notebooks with PROFILE and build the HTML book
	@echo "Book ($(PROFILE) profile): $(abspath $(HTML_INDEX))"

sections: $(SECTIONS) ## Only execute the stale notebooks into book/sections/

# One executed copy per source notebook; stale when the notebook, a lib/ module it uses
# (build/notebook-deps.mk), the profile's parameters, the profile itself (stamp), the runner
# or the venv changed.
book/sections/%.ipynb: notebooks/%.ipynb $(PARAMS) $(PROFILE_STAMP) scripts/execute_notebook.py $(VENV_STAMP)
	$(JOB_ENV) $(PY) scripts/execute_notebook.py $< $@ --profile $(PROFILE)

# Which lib files each notebook uses (its imports, followed through lib to any depth):
# generated from the sources with the standard library, before the venv exists.
NOTEBOOK_DEPS := build/notebook-deps.mk
$(NOTEBOOK_DEPS): scripts/notebook_deps.py $(NOTEBOOKS) $(LIB_FILES)
	$(PYTHON) scripts/notebook_deps.py --out $@ $(NOTEBOOKS)
	@touch $@
ifeq ($(filter help clean venv chromium,$(MAKECMDGOALS)),)
-include $(NOTEBOOK_DEPS)
endif

# Under `make -jN` each notebook's kernel gets nproc/N threads (unless OMP_NUM_THREADS is set),
# so that N kernels do not oversubscribe the cores.
JOBS = $(patsubst -j%,%,$(filter -j%,$(MAKEFLAGS)))
CORES := $(shell nproc 2>/dev/null || echo 1)
JOB_ENV = $(if $(and $(JOBS),$(filter-out 1,$(JOBS)),$(if $(OMP_NUM_THREADS),,x)),OMP_NUM_THREADS=$(shell n=$$(( $(CORES) / $(JOBS) )); echo $$(( n > 0 ? n : 1 ))))

# The benchmarks time methods against peers: under -j they start after every other chapter
# (order only: another chapter's change does not re-run them), so no kernel shares their cores.
BENCHMARK_SECTION := $(filter book/sections/06_benchmarks%,$(SECTIONS))
$(BENCHMARK_SECTION): | $(filter-out $(BENCHMARK_SECTION),$(SECTIONS))
$(BENCHMARK_SECTION): private JOB_ENV :=

$(PROFILE_STAMP) $(TOC_STAMP): FORCE
	@mkdir -p $(@D)
	@text='$(if $(filter $@,$(PROFILE_STAMP)),$(PROFILE_STAMP_TEXT),$(TOC_STAMP_TEXT))'; \
	if [[ ! -f $@ ]] || [[ "$$(cat $@)" != "$$text" ]]; then printf '%s\n' "$$text" > $@; fi

# Rendering only: a failed build leaves the previous HTML in place (see scripts/build_book.py).
$(HTML_INDEX): $(SECTIONS) $(TOC_STAMP) $(BOOK_SOURCES) scripts/build_book.py $(VENV_STAMP)
	$(PY) scripts/build_book.py --out $(@D) $(SECTIONS)

check-notebooks: $(VENV_STAMP) ## Check that source notebooks carry no outputs and one parameters cell
	$(PY) scripts/check_notebooks_clean.py $(NOTEBOOKS)

# Debian's Chromium for the browser checks (Playwright drives it; it downloads no browser).
chromium: ## Install Debian's chromium if it is missing (needs root; without it the browser test skips, and fails under CI=true)
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "warning: could not install chromium; the browser check will be skipped" >&2

check-book: $(HTML_INDEX) chromium ## Open every page of the built book in headless Chromium (errors, images, links, screenshots)
	$(PY) scripts/check_book.py $(HTML_INDEX:/index.html=) --screenshots build/screenshots

test: $(VENV_STAMP) check-notebooks chromium ## Run the whole test suite (unit tests, notebook smoke runs, book build, browser check)
	$(PY) -m pytest

test-fast: $(VENV_STAMP) ## Run the tests that do not execute notebooks
	$(PY) -m pytest -m "not notebooks"

bench: $(VENV_STAMP) ## Time every method beside its peers and floor into benchmarks/results/benchmarks.md
	mkdir -p benchmarks/results
	$(PY) benchmarks/run_all.py --out benchmarks/results

readme: $(HTML_INDEX) ## Refresh the README's figure (book/images/overview.png) and claims headline from the built book
	$(PY) scripts/update_readme.py --sections book/sections

# ---------------------------------------------------------------- editing and experimenting
# A kernel started by JupyterLab has no SALIENCY_SECTIONS: lib.claims writes its claims to
# build/interactive/claims/ and lib.provenance calls it an interactive run. Everything else is
# what `make book` gives its kernels: the venv's python3 kernelspec first, the data root, the
# inline backend, and this shell's environment (devices, threads).
# LAB_ARGS: options for `jupyter lab`, e.g. --no-browser --port=8890 (root, as in containers, gets --allow-root).
LAB_ARGS ?=
LAB_ENV := env -u SALIENCY_SECTIONS -u SALIENCY_RUN SALIENCY_DATA='$(SALIENCY_DATA)' \
  JUPYTER_PATH='$(abspath $(VENV))/share/jupyter' MPLBACKEND=module://matplotlib_inline.backend_inline \
  PYDEVD_DISABLE_FILE_VALIDATION=1

lab: $(VENV_STAMP) ## Open JupyterLab on notebooks/ with the project's kernel and data root (installs the `lab` extra once)
	@$(PY) -c 'import jupyterlab' 2>/dev/null || $(PY) -m pip install -e '.[lab]'
	@test -f $(VENV)/share/jupyter/kernels/python3/kernel.json || $(PY) -m ipykernel install --sys-prefix --name python3
	@echo "JupyterLab: kernel python3 = $(abspath $(PY)), SALIENCY_DATA=$(if $(SALIENCY_DATA),$(SALIENCY_DATA),(unset: ./data))"
	@echo "Interactive runs write to build/interactive/, never to book/sections/. Open the URL printed below; Ctrl-C stops it."
	$(LAB_ENV) $(VENV)/bin/jupyter lab --ServerApp.root_dir='$(CURDIR)' --LabApp.default_url=/lab/tree/notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# `make sweep NOTEBOOK=04 PARAM=groups VALUES=8,16,32`, or PARAM=groups=8,16,32.
sweep: $(VENV_STAMP) ## Run NOTEBOOK once per value (PARAM=name VALUES=v1,v2) into build/interactive/sweeps/ and compare the claims
	@test -n "$(NOTEBOOK)" -a -n "$(PARAM)" || { echo "usage: make sweep NOTEBOOK=04_groupcam_ablations PARAM=groups VALUES=8,16,32 [PROFILE=quick]" >&2; exit 2; }
	$(PY) scripts/sweep.py '$(NOTEBOOK)' '$(if $(VALUES),$(PARAM)=$(VALUES),$(PARAM))' --profile $(PROFILE)

chapter: $(VENV_STAMP) ## Create notebooks/NN_<NAME>.ipynb, a new chapter, from the template (NAME=slug [TITLE="..."])
	@test -n "$(NAME)" || { echo 'usage: make chapter NAME=slug [TITLE="A title"]' >&2; exit 2; }
	$(PY) scripts/new_chapter.py '$(NAME)' $(if $(TITLE),--title "$(TITLE)")

clean: ## Remove the built book, the executed notebooks and build/ (with the scratch runs in build/interactive/)
	rm -rf book/_build book/sections build

FORCE:
