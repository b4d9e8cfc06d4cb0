# dbplane's entry points. `make` builds build/dbplane; `make demo` installs what is needed
# and runs `dbplane up` on the quickstart example; `make check` installs, builds and runs
# every test (unit, integration against real servers), then all of them again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then a short fuzz run.

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
PYTEST     ?= /usr/bin/python3 -m pytest --durations=12
# The ASan pass's integration tests run in this many pytest-xdist workers, a file per
# worker at a time (conftest.py groups them), to keep `make check` under CI's 30 minutes.
# That pass looks for memory errors: its tightest timing assertions are off
# (DBPLANE_SANITIZED). The plain pass stays serial by default (PYTEST_WORKERS=0): it
# keeps them, and in the two runs it had with 2 workers (session 7) it failed once on a
# test race (fixed) and once on test_redis.py::test_session_class_keeps_data_across_kill_9
# (0 keys after the restart), not yet understood. Serial, CI took 26.8 min (123 tests).
PYTEST_WORKERS ?= 0
ASAN_PYTEST_WORKERS ?= 2

.PHONY: all deps demo check test unit integration asan asan-build asan-run fuzz fuzz-build \
        fuzz-run format clean

all:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

deps:
	bash scripts/install-deps.sh

demo: deps all
	./$(BUILD)/dbplane up -f examples/quickstart.yaml $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# The whole suite, as CI runs it. The ASan and fuzz trees are compiled at nice 19 while
# the plain pass runs (its integration tests mostly wait on servers), then their tests run.
check: deps
	$(MAKE) all
	@( nice -n 19 $(MAKE) --no-print-directory asan-build fuzz-build >$(BUILD)/prebuild.log 2>&1; \
	   echo $$? >$(BUILD)/prebuild.rc ) & \
	  $(MAKE) unit integration; rc=$$?; wait; \
	  echo "--- ASan and fuzz builds, made during the plain pass ($(BUILD)/prebuild.log) ---"; \
	  tail -n 5 $(BUILD)/prebuild.log; \
	  [ $$rc = 0 ] && [ "$$(cat $(BUILD)/prebuild.rc)" = 0 ]
	$(MAKE) asan-run
	$(MAKE) fuzz-run

test: all unit integration

unit: all
	cd $(BUILD) && ctest --output-on-failure

integration: all
	DBPLANE_BIN=$(CURDIR)/$(BUILD)/dbplane $(PYTEST) -q \
	  $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadgroup) tests/integration

asan: asan-build asan-run

asan-build:
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DDBP_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)

asan-run:
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure
	DBPLANE_BIN=$(CURDIR)/$(ASAN_BUILD)/dbplane DBPLANE_SANITIZED=1 $(PYTEST) -q \
	  -n $(ASAN_PYTEST_WORKERS) --dist loadgroup tests/integration

# Bounded fuzz runs of every parser target over its checked-in corpus.
fuzz: fuzz-build fuzz-run

fuzz-build:
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DDBP_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j$(JOBS) --target fuzzers

fuzz-run:
	bash tests/fuzz/run.sh $(FUZZ_BUILD) 15

format:
	clang-format -i src/*/*.c src/*/*.h tests/unit/*.c tests/fuzz/*.c

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
