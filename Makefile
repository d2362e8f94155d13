# Two commands on a fresh machine: `make run` (the local stack) and `make test`.
# Both create .venv and install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The dashboard's browser tests drive Debian's Chromium (Playwright's own download is not used).
CHROMIUM ?= /usr/bin/chromium
# Test processes: each runs the in-process API tests it is given, then a local stack of its own (on
# free ports) for the rest. Most live-stack tests wait on boots and passes, so three share 2 cores
# well (measured here: 1 process 302 s, 2: 178 s, 3: 247 s with 170 more tests than the 2 ran).
TEST_WORKERS ?= 3

.PHONY: run demo moto test bench lint format package clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .  # the `oms` command line, as .venv/bin/oms
	touch $(STAMP)

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "The dashboard tests need Chromium at $(CHROMIUM): install Debian's 'chromium' package" \
			"(sudo apt-get install chromium), or set CHROMIUM=/path/to/chromium." >&2; exit 1; \
	fi

run: $(STAMP)  ## the local stack: moto, API, stream pump, scheduler on 127.0.0.1
	$(PY) -m local

demo: $(STAMP)  ## the local stack plus simulated OpenStack providers, ready to take requests
	$(PY) -m local --demo

moto: $(STAMP)  ## moto alone (tables, admin key) for `.venv/bin/chalice local --stage local` to serve the API on
	$(PY) -m local --moto-only

test: $(STAMP) $(CHROMIUM)  ## the whole test suite
	OMS_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -n $(TEST_WORKERS)

bench: $(STAMP)  ## benchmarks on the local stack and the simulator: bench/RESULTS.md and its plot
	$(PY) -m bench

package: $(STAMP)  ## build/prod: deployment.zip and sam.json (CloudFormation, checked by cfn-lint)
	$(PY) -m infra package build/prod
	$(VENV)/bin/cfn-lint build/prod/sam.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache bench/raw
