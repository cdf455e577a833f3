# reidaug: `make demo` and `make test` work on a fresh machine with nothing installed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

R      := $(VENV)/bin/reidaug
DEMO   ?= demo-out$(DEMO_CFG)$(if $(filter-out 0,$(SYNTH_SEED)),-seed$(SYNTH_SEED))

.PHONY: install test demo demo-run lint clean reproduce-table6

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,pose,cluster]"
	$(PY) -c "from reidaug.pose.mediapipe_backend import fetch_models; fetch_models()"
	@# headless Chromium for the report's screenshot test (Debian's package; the test skips without it)
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
		>/dev/null; } || echo "chromium not installed: the report screenshot test will skip"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check reidaug tests benchmarks

# The whole pipeline on the synthetic dataset (each step skips what an earlier run finished). On a machine where
# torch sees a CUDA GPU the demo takes its larger profile by itself (configs/*/demo-cuda.yaml); DEMO_PROFILE=cpu
# or =cuda chooses one, SYNTH_SEED=N another synthetic dataset; each profile and seed has its own DEMO folder.
DEMO_PROFILE ?= auto
SYNTH_SEED   ?= 0
DEMO_CFG     := $(if $(filter cuda,$(DEMO_PROFILE)),-cuda)
GEN          := multisource
GEN_CFG      := methods/$(GEN)-demo-$(if $(filter cuda,$(DEMO_PROFILE)),cuda,cpu)
CUDA_OR_CPU  := $(PY) -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')"
demo: install
	$(MAKE) --no-print-directory demo-run \
		DEMO_PROFILE=$(if $(filter auto,$(DEMO_PROFILE)),$$($(CUDA_OR_CPU)),$(DEMO_PROFILE))

demo-run: $(DEMO)/$(GEN)/.done
	$(R) experiment --config experiments/demo$(DEMO_CFG) --data $(DEMO)/synth --out $(DEMO)/experiment \
		--set generators.$(GEN)=$(DEMO)/$(GEN)/checkpoints/latest.pt
	@echo "pictures: $(DEMO)/synth_preview.png (dataset), $(DEMO)/$(GEN)/samples/ (training),"
	@echo "          $(DEMO)/experiment/examples.png (augmentation), $(DEMO)/experiment/map_vs_portion.png (result)"
	@echo "report:   $(DEMO)/experiment/report.html"

$(DEMO)/synth/synth.json: | install
	$(R) synth --out $(DEMO)/synth --config synth/demo --set synth.seed=$(SYNTH_SEED) --overwrite \
		--preview $(DEMO)/synth_preview.png

$(DEMO)/pairs.csv: $(DEMO)/synth/synth.json
	$(R) pairs --annotations $(DEMO)/synth/annotations/train.csv --out $@ --overwrite

$(DEMO)/$(GEN)/.done: $(DEMO)/pairs.csv
	$(R) train --method $(GEN) --config $(GEN_CFG) --data $(DEMO)/synth --pairs $(DEMO)/pairs.csv \
		--out $(DEMO)/$(GEN)
	touch $@

# The paper's setting on a GPU machine: make reproduce-table6 MARKET=/path/Market-1501-v15.09.15 ANNOTATIONS=/path
# trains every registered method (or METHODS="patn xinggan") and runs the Table 6 sweep with all of them.
METHODS     ?= $(shell $(PY) -m reidaug.models.registry 2>/dev/null)
MARKET      ?=
ANNOTATIONS ?=
RUNS        ?= runs
reproduce-table6: install
	@test -n "$(MARKET)" -a -n "$(ANNOTATIONS)" || { echo "usage: make reproduce-table6 MARKET=... ANNOTATIONS=..."; exit 2; }
	mkdir -p $(MARKET)/annotations
	test -f $(MARKET)/annotations/train.csv || cp $(ANNOTATIONS)/market-annotation-train.csv $(MARKET)/annotations/train.csv
	test -f $(MARKET)/annotations/test.csv || cp $(ANNOTATIONS)/market-annotation-test.csv $(MARKET)/annotations/test.csv
	$(R) pairs --annotations $(MARKET)/annotations/train.csv --out $(RUNS)/market-pairs-train.csv --overwrite
	for m in $(METHODS); do \
		$(R) train --method $$m --data $(MARKET) --pairs $(RUNS)/market-pairs-train.csv --out $(RUNS)/$$m \
			$$(test -f $(RUNS)/$$m/checkpoints/latest.pt && echo --resume) || exit 1; done
	$(R) experiment --config experiments/table6 --data $(MARKET) --out $(RUNS)/table6 \
		$(foreach m,$(METHODS),--set generators.$(m)=$(RUNS)/$(m)/checkpoints/latest.pt)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache runs demo-out*
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
