# clcnn: `make train` sets up and trains on Fashion-MNIST; `make test` sets up and runs the test suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check
EPOCHS ?= 3
DEVICE ?= auto

.PHONY: train test data devices clean

$(VENV)/.core: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) -e '.[pocl]'
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) -e '.[pocl,oclgrind,test]'
	$(PIP) torch==2.13.0 || echo "note: torch==2.13.0 could not be installed; the PyTorch oracle tests will skip"
	touch $@

data:
	@sh tools/get-data.sh fashion-mnist

devices: $(VENV)/.core
	$(BIN)/clcnn devices

train: $(VENV)/.core data
	$(BIN)/clcnn devices
	$(BIN)/clcnn train --dataset fashion-mnist --model lenet5 --device $(DEVICE) --epochs $(EPOCHS) \
		--batch-size 64 --lr 0.05 --momentum 0.9 --seed 0

# Debian's PoCL (LLVM 15) as well as the wheel's: the wheel's LLVM 14 cannot build for some newer CPUs.
test: $(VENV)/.test
	-@sh tools/get-data.sh fashion-mnist || echo "note: Fashion-MNIST missing; the end-to-end tests will skip"
	-@sh tools/apt-install.sh pocl-opencl-icd
	CLCNN_CACHE_DIR=$(CURDIR)/.cache/kernels $(BIN)/python -m pytest -q -n auto --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .cache
