# `make run` and `make test` set up .venv on a fresh machine by themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the exact versions the suite passed with (`make lock` refreshes it)
LOCK := constraints.txt

.PHONY: run test bench lint lock clean-venv

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# the local CPU build of torch first, so no dependency pulls a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[dev]"
	# Meta-World without its pin of mujoco 3.3.0: env=ml1/ml10 fit its welds to mujoco 4 (docs/metaworld.md)
	$(PY) -m pip install --quiet --no-deps -c $(LOCK) metaworld
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m maml_rl $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) experiments/bench.py $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check maml_rl tests experiments

# the newest versions pyproject.toml allows, installed into a throwaway venv and written to $(LOCK);
# then `make clean-venv test` checks them before they are committed
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet torch==2.13.0
	.venv-lock/bin/pip install --quiet -e ".[dev]"
	.venv-lock/bin/pip install --quiet --no-deps metaworld
	{ echo "# pip constraints: the versions \`make test\` passed with; refreshed by \`make lock\`"; \
	  .venv-lock/bin/pip freeze --exclude-editable; } > $(LOCK)
	rm -rf .venv-lock

clean-venv:
	rm -rf $(VENV)
