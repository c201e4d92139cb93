# make demo: the whole idea end to end on a laptop CPU (offline after the install)
# make test: the test suite (CPU, a few minutes)
# Both first create .venv and install the pinned requirements (torch==2.13.0: see requirements.txt).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test demo clean

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

clean:
	rm -rf out/demo
