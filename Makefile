# Two commands set up and run everything on a fresh machine:
#   make train   # creates .venv, installs, trains configs/vit_cifar.py:tiny
#   make test    # creates .venv, installs, runs the test suite
# Knobs: make train CONFIG=configs/vit_cifar.py DATASET=imagefolder:PATH WORKDIR=runs/x ARGS='--config.total_steps=500'

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/vit_cifar.py:tiny
WORKDIR ?= runs/$(subst :,_,$(basename $(notdir $(firstword $(subst :, ,$(CONFIG))))))$(if $(findstring :,$(CONFIG)),_$(lastword $(subst :, ,$(CONFIG))))
DATASET ?=
ARGS ?=
DATA_CACHE := .cache/data
SHARED_DATA ?= ../shared/data

.PHONY: train test install data clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# The tests also check weight import against PyTorch/transformers models
# and ONNX export with onnxruntime.
$(VENV)/.installed-interop: $(VENV)/.installed
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,interop,export]'
	touch $@

install: $(VENV)/.installed

train: $(VENV)/.installed
	$(PY) -m aisci.main --config=$(CONFIG) --workdir=$(WORKDIR) \
	  $(if $(DATASET),--config.dataset=$(DATASET)) $(ARGS)

# Two workers, each taking whole test files (module fixtures are built
# once): most of a test's time is compiling, which is single-threaded.
# The files go out in collection order, longest first (tests/conftest.py's
# LONG_FILES), so that both workers finish together.
# TEST_ARGS='-n 0' runs the suite in one process.
TEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder
test: $(VENV)/.installed-interop
	$(PY) -m pytest -q $(TEST_ARGS) tests

# Extracts the real data sets of ../shared/data into .cache/data (ignored).
data:
	mkdir -p $(DATA_CACHE)
	for f in $(SHARED_DATA)/*.tar.gz; do tar -xzf $$f -C $(DATA_CACHE); done

clean-venv:
	rm -rf $(VENV)
