# The two set-up commands of the README. Both create/refresh .venv/ at the repo root.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OPENBLAS_NUM_THREADS ?= 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test install bench clean check-wheel

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel. An unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The live page on the shipped catalog at http://localhost:8000/ until Ctrl-C (no API keys:
# localhost only). SIMULATE=N adds N simulated reader events per second; PORT=N picks the port.
SIMULATE ?= 2
PORT ?= 8000
demo: $(STAMP)
	$(BIN)/liverec serve --demo --open --store sqlite:///liverec-demo.db --simulate $(SIMULATE) --port $(PORT)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/liverec
	$(BIN)/python -m pytest -n 2 --dist loadfile --doctest-modules src tests

# Build sdist + wheel, install the wheel into a fresh venv (torch CPU first, then [redis])
# and run the README quick start and `liverec serve` from outside the checkout.
check-wheel: $(STAMP)
	$(BIN)/python scripts/check_wheel.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build dist
