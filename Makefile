# make demo: fresh machine → virtualenv, install, quickstart training + evaluation + plot.
# make test: install, then the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: install browser demo test test-slow lint format bench listings clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Torch is pinned and installed first: an unpinned resolve would download GBs of CUDA wheels.
# The demo needs the package alone; tests add the dev extras (Ray, MLflow, Selenium, pytest).
# --no-compile: pip would byte-compile all 11,000 modules one by one (47 s of an 83 s install);
# Python compiles the few hundred a run imports when it imports them (benchmarks/RESULTS.md).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --no-compile torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet --no-compile -e .
	touch $@

# The suite starts hundreds of Python processes: byte-compile everything once, on every core
# (-qq: a few of torch's test helpers use newer syntax and do not compile, as under pip).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -m compileall -qq -j 0 $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || true
	touch $@

install: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/iclab quickstart

# Headless Chromium for the report's browser test (Debian packages); where it cannot be
# installed, that test is skipped and says why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	  echo "make browser: could not install chromium; the report's browser test will be skipped" >&2

# pytest exits 5 when it collects no tests: say so, and fail (a suite that runs nothing proves nothing).
test: install browser
	@$(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status

test-slow: install
	$(BIN)/python -m pytest -q -m slow --durations=10

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# The listings' snapshot (src/iclab/listing.json), after adding or changing a registered class;
# a test says when it is due.
listings: install
	$(BIN)/python -m iclab.listing

bench: install
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/baselines.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
