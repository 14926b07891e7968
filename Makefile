# Two commands do all the set-up on a fresh machine:
#   make demo   installs what is missing, then pre-trains FastMIM on the embedded real photos
#   make test   installs what is missing, then runs the whole test suite
# PYTHON=... picks the interpreter; unset, tools/setup_env.sh takes python3.11, else python3.
# FASTMIM_VENV=<folder> puts the environment there instead of .venv/ (a larger disk).
PYTHON ?=
VENV := $(or $(FASTMIM_VENV),.venv)
PY := $(VENV)/bin/python

.PHONY: setup demo test clean-venv

setup:
	@PYTHON=$(PYTHON) tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

test: setup
	$(PY) -m pytest tests -q -ra --durations=15

clean-venv:
	rm -rf $(VENV)
