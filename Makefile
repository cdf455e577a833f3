# reidaug: `make demo` and `make test` work on a fresh machine with nothing installed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test demo lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,pose]"
	$(PY) -c "from reidaug.pose.mediapipe_backend import fetch_models; fetch_models()"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check reidaug tests benchmarks

demo: install
	$(VENV)/bin/reidaug demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache runs demo-out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
