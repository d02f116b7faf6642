# Entry points (see README.md): `make demo` runs the whole study on the CPU, `make test` the test
# suite; `make book` rebuilds the report from a study's outputs, `make publish` puts it on GitHub
# Pages. Each creates the virtual environment .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUTPUTS ?= outputs/demo
REMOTE ?= origin

.PHONY: demo test venv book publish clean-outputs

venv: $(VENV)/.installed

# torch first, pinned: the CPU wheel on a plain machine; the package then finds it satisfied.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[notebooks,book,dev]"
	touch $@

demo: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash hpc/demo.sh

test: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q $(PYTEST_ARGS)

# The report of the study under OUTPUTS (its executed notebooks), without rerunning anything.
book: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m imginav_core stage -p output_root $(OUTPUTS)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" jupyter-book build book

# The built report to the gh-pages branch of REMOTE. -n writes .nojekyll: without it GitHub Pages
# drops the folders starting with "_", _static/html-manager/ (the widgets) among them.
publish: venv
	$(VENV)/bin/ghp-import -n -p -f -r $(REMOTE) book/_build/html

clean-outputs:
	rm -rf outputs book/_build book/generated
