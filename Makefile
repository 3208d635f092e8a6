# stream-monitor: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
KAFKA  := $(PY) deploy/local/kafka.py
export KAFKA_PORT ?= 9092
KAFKA_BOOTSTRAP_LOCAL := 127.0.0.1:$(KAFKA_PORT)
PYTEST_ARGS ?=

.PHONY: venv kafka-up kafka-down deploy-tools demo test test-unit chaos bench clean

venv: $(VENV)/.installed

# The compiled block decoder (Rust, stream_monitor/_decode_rs): built with cargo where there is
# one (on PATH or rustup's ~/.cargo/bin); without it blocks are decoded with msgspec, more slowly.
CARGO ?= $(shell command -v cargo 2>/dev/null || { test -x $(HOME)/.cargo/bin/cargo && echo $(HOME)/.cargo/bin/cargo; })
DECODER := stream_monitor/_decode_rs
DECODER_SOURCES := $(DECODER)/Cargo.toml $(DECODER)/Cargo.lock $(DECODER)/pyproject.toml $(DECODER)/src/lib.rs

# The demo needs the package and its dependencies only; the tests add the [test] extra.
# pip shows what it downloads and installs (a first run takes a minute or two).
$(VENV)/.installed-run: pyproject.toml $(DECODER_SOURCES)
	@echo "venv: installing stream-monitor and its dependencies into $(VENV) ..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar on -e .
	@if [ -n "$(CARGO)" ]; then \
	  echo "venv: building the compiled block decoder ($(DECODER), Rust; about a minute the first time) ..."; \
	  PATH="$$(dirname $(CARGO)):$$PATH" $(PY) -m pip install --progress-bar on ./$(DECODER) || exit 1; \
	else \
	  echo "venv: cargo not found: blocks are decoded with msgspec (install Rust to build $(DECODER))" >&2; \
	fi
	touch $@

$(VENV)/.installed: $(VENV)/.installed-run
	@echo "venv: installing the test tools into $(VENV) ..."
	$(PY) -m pip install --progress-bar on -e '.[test]'
	touch $@

kafka-up: venv
	$(KAFKA) up

kafka-down:
	@if [ -x $(PY) ]; then $(KAFKA) down; else $(PYTHON) deploy/local/kafka.py down; fi

# The broker is stopped even when the tests fail; the exit status is pytest's.
# pytest exit code 5 (nothing collected) is a failure here too.
test: venv deploy-tools
	$(KAFKA) up
	KAFKA_BOOTSTRAP=$(KAFKA_BOOTSTRAP_LOCAL) $(PY) -m pytest $(PYTEST_ARGS); \
	  status=$$?; \
	  $(KAFKA) down; \
	  if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	  exit $$status

# The long fault runs of tests/chaos (kill -9, SIGTERM, rebalance churn, broker bounces), each
# printing a table of lost, duplicated and spurious alerts; `make test` leaves them out.
chaos: venv
	$(KAFKA) up
	KAFKA_BOOTSTRAP=$(KAFKA_BOOTSTRAP_LOCAL) $(PY) -m pytest -m chaos tests/chaos -s $(PYTEST_ARGS); \
	  status=$$?; \
	  $(KAFKA) down; \
	  if [ $$status -eq 5 ]; then echo "make chaos: pytest collected no tests" >&2; fi; \
	  exit $$status

# Prometheus, promtool and Alertmanager from Debian's packages for tests/deploy, and Chromium
# to render the backtest report (tests/unit/test_replay_report_render.py).
deploy-tools:
	bash deploy/local/prometheus_tools.sh
	bash deploy/local/browser_tools.sh

test-unit: venv
	$(PY) -m pytest -m 'not integration' $(PYTEST_ARGS)

# Ctrl-C goes to the demo, which stops the monitor and the producer; the trap keeps
# this shell alive to stop the broker afterwards.
# A broker that was already up (make kafka-up, another demo) is used and left running:
# only a broker this demo started is stopped at the end.
DEMO_BROKER_OWNER := .cache/demo/broker-started-$(KAFKA_PORT)
demo: $(VENV)/.installed-run
	$(KAFKA) up --owner-file $(DEMO_BROKER_OWNER)
	@trap 'true' INT TERM; \
	  $(PY) -m stream_monitor.demo --bootstrap $(KAFKA_BOOTSTRAP_LOCAL); \
	  status=$$?; $(KAFKA) down --owner-file $(DEMO_BROKER_OWNER); exit $$status

# Against the local broker (the benchmarks that measure the service from a real broker read
# KAFKA_BOOTSTRAP, and skip that part without it): a broker already up is used and left
# running, one started here is stopped at the end.
BENCH_BROKER_OWNER := .cache/bench/broker-started-$(KAFKA_PORT)
bench: venv
	$(KAFKA) up --owner-file $(BENCH_BROKER_OWNER)
	@status=0; for script in bench/*.py; do \
	  case $$script in */_*) continue;; esac; \
	  echo "== $$script"; \
	  KAFKA_BOOTSTRAP=$(KAFKA_BOOTSTRAP_LOCAL) $(PY) $$script || { status=1; break; }; \
	done; \
	$(KAFKA) down --owner-file $(BENCH_BROKER_OWNER); \
	exit $$status

clean: kafka-down
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
