# Shortcuts for those who have make; the README's two commands are scripts/lab and scripts/test,
# which a bare machine without make runs as well.
.PHONY: setup lab test bench clean

setup:
	@bash scripts/setup.sh --test

lab:
	@scripts/lab

test:
	@scripts/test $(PYTEST_ARGS)

bench: setup
	.venv/bin/python bench/bench_lab.py $(BENCH_ARGS)
	.venv/bin/python bench/bench_checks.py
	.venv/bin/python bench/bench_tui.py

clean:
	rm -rf .venv .pytest_cache
