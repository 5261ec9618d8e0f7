# One-command set-up: `make demo` and `make test` create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench clean install datasets real-zoo reproduce seed-study chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, pinned, so nothing later resolves to a CUDA build. Chromium drives the web tests.
$(STAMP): $(BIN)/python pyproject.toml
	@command -v chromium >/dev/null || $(MAKE) chromium
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,demo,bench]'
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for zoo serve's browser tests (Playwright drives the system browser).
chromium:
	@SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	if command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null || \
		(DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -q >/dev/null && \
		 DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null); \
	else echo "install Chromium (Debian: apt-get install chromium) for the browser tests" >&2; exit 1; fi

test: $(STAMP)
	@command -v chromium >/dev/null || $(MAKE) chromium
	$(BIN)/python -m pytest -q

# The end-to-end experiment tests (minutes of CLI subprocesses), outside `make test`.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

demo: $(STAMP)
	bash examples/demo.sh

# Real datasets from Debian packages (fortunes, WordNet) into data/real; see the script's docstring.
datasets: $(STAMP)
	$(BIN)/python scripts/build_datasets.py --out data/real

# Fine-tune the base on every dataset with SEEDS (2) seeds through the zoo CLI (resumable; 42 min on 2 cores).
real-zoo: $(STAMP)
	@test -f data/real/datasets.json || $(MAKE) datasets
	$(BIN)/python scripts/real_zoo.py --data data/real --home $${ZOO_HOME:-.zoo-real} --seeds $${SEEDS:-2} --epochs 2

# The paper's findings, measured with zoo commands on the real zoo (resumable; REPRODUCE_BUDGET in minutes).
reproduce: $(STAMP)
	@test -f data/real/datasets.json || $(MAKE) datasets
	$(BIN)/python scripts/reproduce.py --home $${ZOO_HOME:-.zoo-real} --data data/real --out docs \
		$${REPRODUCE_BUDGET:+--budget-min $$REPRODUCE_BUDGET}

# Does a fine-tune carry its data or its seed? Exact distances by head initialisation (issue 16).
seed-study: $(STAMP)
	@test -f data/real/datasets.json || $(MAKE) datasets
	$(BIN)/python scripts/seed_study.py --data data/real --out docs/seed_study_topic.json
	$(BIN)/python scripts/seed_study.py --data data/real --datasets langid-short langid-medium \
		--out docs/seed_study_langid.json

bench: $(STAMP)
	$(BIN)/python bench/bench_register.py
	$(BIN)/python bench/bench_fidelity.py
	$(BIN)/python bench/bench_query.py
	$(BIN)/python bench/bench_overhead.py
	$(BIN)/python bench/bench_threads.py
	$(BIN)/python bench/bench_adapter.py
	$(BIN)/python bench/bench_adapter.py --busy 2

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
