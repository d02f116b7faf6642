# Entry points (see README.md): `make demo` runs the whole study on the CPU (`make demo-sweep`: with
# the KL-weight sweep, one seed per weight), `make test` the test suite, `make lint` the code's
# checks (ruff, shellcheck); `make book` rebuilds the report from a study's outputs, `make publish`
# puts it on GitHub Pages. Each creates the virtual environment .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUTPUTS ?= outputs/demo
REMOTE ?= origin

.PHONY: demo demo-sweep test lint venv book publish clean-outputs

venv: $(VENV)/.installed

# torch first, pinned to the version the project is tested with, as the build that fits the
# machine: with an NVIDIA GPU (nvidia-smi) the default index's (on Linux a CUDA build); without
# one the CPU build from PyTorch's CPU index, a fraction of the CUDA build's size, unless that index
# cannot be reached: then the default index's, said on the console. The package then finds torch
# satisfied. TORCH_CPU_INDEX and NVIDIA_SMI may be overridden (the tests do); PIP_FLAGS too.
TORCH := torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
NVIDIA_SMI ?= $(shell command -v nvidia-smi 2>/dev/null)
PIP_FLAGS ?= --quiet

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	@if [ -n "$(NVIDIA_SMI)" ]; then \
	  echo "torch: an NVIDIA GPU is here ($(NVIDIA_SMI)): $(TORCH) from the default index"; \
	  $(PY) -m pip install $(PIP_FLAGS) "$(TORCH)"; \
	elif ! $(PY) -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=20)' \
	    "$(TORCH_CPU_INDEX)" 2>/dev/null; then \
	  echo "torch: no NVIDIA GPU here, but $(TORCH_CPU_INDEX) cannot be reached:" \
	       "$(TORCH) from the default index instead (on Linux from PyPI that is the CUDA build, several GB)"; \
	  $(PY) -m pip install $(PIP_FLAGS) "$(TORCH)"; \
	else \
	  echo "torch: no NVIDIA GPU here: $(TORCH), the CPU build, from $(TORCH_CPU_INDEX)"; \
	  $(PY) -m pip install $(PIP_FLAGS) --index-url "$(TORCH_CPU_INDEX)" "$(TORCH)" || { \
	    echo "torch: $(TORCH_CPU_INDEX) has no $(TORCH) for this machine (above): from the default index instead"; \
	    $(PY) -m pip install $(PIP_FLAGS) "$(TORCH)"; }; \
	fi
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[notebooks,book,dev]"
	touch $@

demo: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash hpc/demo.sh

# JupyterLab opened on the study under OUTPUTS (the demo's, after `make demo`): the notebooks read
# it through IMGINAV_OUTPUTS and change nothing of it. They open as copies in LAB_DIR (outside git:
# their outputs and your edits never touch notebooks/); a copy you changed is kept, said. JupyterLab
# prints the address to open, with its access token (?token=...). LAB_FLAGS adds its options, e.g.
# LAB_FLAGS="--no-browser --port 8890".
.PHONY: lab
LAB_FLAGS ?=
LAB_DIR ?= outputs/lab
# JupyterLab refuses to run as root unless told (containers, some workstations): then it is told.
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: venv
	@mkdir -p $(LAB_DIR)
	@for notebook in notebooks/*.ipynb; do \
	  copy=$(LAB_DIR)/$$(basename $$notebook); \
	  if [ ! -f $$copy ]; then cp $$notebook $$copy; \
	  elif ! cmp -s $$notebook $$copy; then \
	    echo "$$copy is kept: it differs from $$notebook (your edits or outputs; delete it to take the current one)"; \
	  fi; \
	done
	@echo "JupyterLab on copies of the notebooks ($(LAB_DIR)/), opened on the study in $(OUTPUTS) (IMGINAV_OUTPUTS)."
	@echo "Open the address JupyterLab prints below, the one ending in ?token=... (the token is the password);"
	@echo "on a remote machine forward the port first (ssh -L 8888:localhost:8888 HOST). Ctrl-C stops it."
	IMGINAV_OUTPUTS=$(OUTPUTS) PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/jupyter lab --notebook-dir=$(LAB_DIR) $(LAB_ROOT) $(LAB_FLAGS)

# The KL-weight sweep at the demo's size, into SWEEP_OUTPUTS: one seed per weight (V1's and V2's runs
# and the VAE at the sweep's 4 other weights), the probe on each, the report with the KL-weight curve.
SWEEP_OUTPUTS ?= outputs/demo-sweep
demo-sweep: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" IMGINAV_OUTPUTS=$(SWEEP_OUTPUTS) bash hpc/demo.sh --sweep --seeds 42

# --durations: the slowest tests, where the suite's minutes go.
test: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

# What pre-commit runs on every commit (.pre-commit-config.yaml), on every file: CI runs it first.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	shellcheck hpc/*.sh .ci/run .ci/installed

# The report of the study under OUTPUTS (its executed notebooks), without rerunning anything.
book: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m imginav_core stage --out $(OUTPUTS)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" jupyter-book build book

# The built report to the gh-pages branch of REMOTE. -n writes .nojekyll: without it GitHub Pages
# drops the folders starting with "_", _static/html-manager/ (the widgets) among them.
publish: venv
	$(VENV)/bin/ghp-import -n -p -f -r $(REMOTE) book/_build/html

clean-outputs:
	rm -rf outputs book/_build book/generated
