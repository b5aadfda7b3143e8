# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo

.PHONY: demo test test-slow install clean-demo grf

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

# `make test` runs every test but those marked slow (35 s of CPU or more each, mostly learning runs on tiny
# tasks); `make test-slow` runs those. CI (.ci/run) runs both, one after the other.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15 -m "not slow" tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15 -m slow tests

clean-demo:
	rm -rf $(DEMO_OUT)

# Google Research Football for env=grf:<scenario> (an optional extra): the system packages gfootball's engine
# builds against, then gfootball 2.10.2 compiled from source (about 2.5 minutes on 2 cores) with gym 0.25.2
# (0.26 changed `reset`). apt-get needs root, or a user with sudo.
GRF_APT := build-essential cmake libgl1-mesa-dev libegl1-mesa-dev libsdl2-dev libsdl2-image-dev libsdl2-ttf-dev \
	libsdl2-gfx-dev libboost-python-dev libboost-system-dev libboost-filesystem-dev libboost-thread-dev
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
grf: $(STAMP)
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y --no-install-recommends $(GRF_APT)
	$(BIN)/python -m pip install --quiet psutil setuptools wheel six 'gym==0.25.2'
	# gfootball's build runs `python3` from PATH to compile its engine: the venv's, which has psutil.
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pip install --no-build-isolation 'gfootball==2.10.2'
	$(BIN)/python -c "import gfootball.env; print('gfootball installed: env=grf:<scenario> is available')"
