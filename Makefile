# Set-up and entry points. `make demo` and `make test` each create or reuse the virtual
# environments, installing the CPU build of torch first (it lies on local disk) so that
# nothing pulls a multi-GB CUDA build.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
VENV3 := .venv-tl3
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-tl4 test-tl3 lint browser clean

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH)"
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

$(VENV3)/.installed: pyproject.toml
	test -x $(VENV3)/bin/python || $(PYTHON) -m venv $(VENV3)
	$(VENV3)/bin/pip install -q --upgrade pip
	$(VENV3)/bin/pip install -q "$(TORCH)"
	$(VENV3)/bin/pip install -q -e ".[dev]" "transformer-lens<4"
	touch $@

# The shipped model and transcoder's figures, then a short run of the five demos (graph pages
# into demos/out/).
demo: $(VENV)/.installed
	$(VENV)/bin/tl-clt demo
	$(VENV)/bin/python demos/run_all.py --quick

# Headless Chromium for the browser tests (Debian's package; about a minute to install).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium for the browser tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    { echo "could not install chromium (need root and Debian's apt)"; exit 1; }; }

# The whole suite on transformer-lens 4.x (TransformerBridge) and 3.x (HookedTransformer),
# the two run side by side with one torch thread each.
test: $(VENV)/.installed $(VENV3)/.installed browser
	@bash scripts/run_tests.sh "$(VENV)" "$(VENV3)"

test-tl4: $(VENV)/.installed browser
	OMP_NUM_THREADS=2 $(VENV)/bin/python -m pytest -q

test-tl3: $(VENV3)/.installed browser
	OMP_NUM_THREADS=2 $(VENV3)/bin/python -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(VENV3) .pytest_cache .ruff_cache
