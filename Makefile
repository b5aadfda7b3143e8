# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo

.PHONY: demo test install clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# A short CADP + QMIX run on SMAX 3m (pruning from half-way), greedy evaluation of both its centralized and
# decentralized models, the audit of the exported decentralized policy, and its report.
demo: $(STAMP)
	$(BIN)/ctde train env=smax:3m algo=qmix paradigm=cadp cadp.prune_start=3e4 steps=6e4 seeds=1 \
		out=$(DEMO_OUT) --overwrite
	$(BIN)/ctde eval $(DEMO_OUT) --model centralized --episodes 128
	$(BIN)/ctde eval $(DEMO_OUT) --model decentralized --episodes 128
	$(BIN)/ctde audit $(DEMO_OUT)/policy
	@echo
	@echo "Report:          $(DEMO_OUT)/report.md"
	@echo "Learning curve:  $(DEMO_OUT)/learning_curve.png"
	@echo "Exported policy: $(DEMO_OUT)/policy/"

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15 tests

clean-demo:
	rm -rf $(DEMO_OUT)
