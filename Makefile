# The two commands of the README, and a few helpers. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

PYTEST_ARGS ?=
# test files run in parallel, one process per worker, each file on one worker (its module
# fixtures stay together); end-to-end tests spend much of their time starting processes. Each
# worker's torch gets TEST_THREADS threads, so that workers x threads do not oversubscribe the cores
TEST_WORKERS ?= 2
TEST_THREADS ?= 1
PYTEST := OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

.PHONY: run personalize test test-rest test-fast repro ui prefect-ui clean

run: $(RUNTIME)  ## set up, then run the retrain flow on the embedded default
	$(BIN)/alignpipe run

personalize: $(RUNTIME)  ## after `make run`: personal adapters for the deployers and users of policies.yaml
	$(BIN)/alignpipe personalize

# The suite in two tiers, disjoint, together the whole of it (CI runs both: .ci/run).
# PYTEST_ARGS passes options through, e.g. make test PYTEST_ARGS="--durations=25".
test: $(DEV)  ## set up with dev extras, then the fast tests and one end-to-end smoke run (under 10 min)
	$(PYTEST) -m "not slow or smoke" $(PYTEST_ARGS)

test-rest: $(DEV)  ## the other end-to-end tests: training, servers, the team's services, the app (about 24 min)
	$(PYTEST) -m "slow and not smoke" $(PYTEST_ARGS)

test-fast: $(DEV)  ## the fast tests alone, without the smoke run (about 2 min)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

repro: $(RUNTIME)  ## rebuild stale stages with DVC alone (no registry changes)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

ui: $(RUNTIME)  ## MLflow UI over the local state
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath .alignpipe/mlflow.db) --port 5000

prefect-ui: $(RUNTIME)  ## Prefect UI over the local state (flow runs, their logs, deployments) on port 4200
	PREFECT_HOME=$(abspath .alignpipe/prefect) PREFECT_SERVER_ANALYTICS_ENABLED=false \
		$(BIN)/prefect server start --host 127.0.0.1 --port 4200

# torch is pinned and installed first: an unpinned torch pulls GBs of CUDA wheels.
$(RUNTIME): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

clean:  ## remove pipeline outputs and local MLflow/Prefect state (keeps .venv)
	rm -rf artifacts .alignpipe dvc.lock .dvc/cache .dvc/tmp
