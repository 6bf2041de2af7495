# The two commands a new user needs: `make lab` (the TUI on a netns lab) and `make test`.
# Both run `setup` first, which installs Debian packages and .venv idempotently.
.PHONY: setup lab test bench lint clean

VENV := .venv
PY := $(VENV)/bin/python

setup:
	@bash scripts/setup.sh

lab: setup
	$(VENV)/bin/ipsec-lab

test: setup
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

bench: setup
	$(PY) bench/bench_lab.py $(BENCH_ARGS)
	$(PY) bench/bench_checks.py
	$(PY) bench/bench_tui.py

clean:
	rm -rf $(VENV) .pytest_cache
