# lowpower: make setup | make demo | make test   (see README.md)
PYTHON ?= python3
VENV := .venv
PY := $(abspath $(VENV))/bin/python
STAMP := $(VENV)/.installed-requirements
# pip installs with --no-compile (2.5 minutes saved); bytecode is then written on first import, and
# only for what is imported, which a PYTHONDONTWRITEBYTECODE inherited from the shell would forbid,
# making every later command recompile torch (about 5 s each).
unexport PYTHONDONTWRITEBYTECODE
DEMO := runs/demo

.PHONY: setup demo test test-fast clean-demo help

help:
	@echo "make setup   create .venv with the pinned requirements (torch $(shell sed -n 's/^torch==//p' requirements.txt), ...)"
	@echo "make demo    synthetic data -> train on the CPU -> test -> package -> score -> pre-submission check"
	@echo "make test    the whole test suite (what CI runs)"
	@echo "make test-fast  the tests not marked slow (no torchrun, run.pbs or full-package checks)"

setup: $(STAMP)

# The project itself goes in editable, so the `lowpower` command runs this checkout (no build isolation:
# setuptools is already pinned in requirements.txt, and nothing more is downloaded).
$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --no-compile -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-compile --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The demo packages with --no-verify: the two steps after it run the package as the referee does
# (evaluate.bash) and check it (presubmit), which is what the packager's own verification does.
# --force: the demo owns runs/demo/solution.pyz, so a second `make demo` replaces it.
demo: setup
	$(PY) train.py --cfg configs/synthetic/demo.yaml --out $(DEMO) --resume auto
	$(PY) test.py --checkpoint $(DEMO)/best.pt --save-images $(DEMO)/val_panels --json $(DEMO)/val.json
	./compress.sh $(DEMO)/best.pt -o $(DEMO)/solution.pyz --no-verify --force
	rm -rf evaluation/test && mkdir -p evaluation/test && cp -r data/synthetic/test/IMG data/synthetic/test/GT evaluation/test/
	PYTHON=$(PY) evaluation/evaluate.bash $(DEMO)/solution.pyz; test $$? -eq 0
	$(PY) -m lowpower presubmit $(DEMO)/solution.pyz
	$(PY) -m lowpower demo $(DEMO)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

clean-demo:
	rm -rf $(DEMO) evaluation/test evaluation/output
