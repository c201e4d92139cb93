# make demo: the whole idea end to end on a laptop CPU (offline after the install)
# make test: the test suite (CPU, a few minutes)
# make bench-gpu: the GPU rows of docs/benchmarks.md as one markdown table (one H100/H200, < 10 min, data included);
#   make bench-gpu DEVICE=cpu runs the same rows at toy sizes (make test does); BENCH_ARGS: bench_gpu.py's options
# Each first creates .venv and install the pinned requirements (torch==2.13.0: see requirements.txt).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test demo clean bench-gpu
DEVICE ?= cuda
BENCH_ARGS ?=

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/python prepare/demo.py
	$(BIN)/python sweep.py config/sweep_demo.py --jobs=2
	$(BIN)/python plot.py out/demo --report

bench-gpu: install
	$(BIN)/python bench_gpu.py --device=$(DEVICE) $(BENCH_ARGS)

clean:
	rm -rf out/demo
