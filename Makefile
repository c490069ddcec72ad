# agentws: the commands a user needs (`make help` lists them). Each target
# that runs something installs what is missing (scripts/install-deps.sh,
# Debian packages) and builds first.
BUILD      ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS       ?= $(shell nproc)
HOST       ?= 127.0.0.1
PORT       ?= 8000
CMAKE_ARGS ?=
# Where ws-client connects: the server's address, or loopback when the server
# listens on every address.
CLIENT_HOST ?= $(if $(filter 0.0.0.0 ::,$(HOST)),127.0.0.1,$(HOST))

.PHONY: all help deps build ws-server ws-client check-server demo test test-asan test-tsan bench \
        fuzz format clean

all: build

help: ## this list
	@echo "make TARGET [BUILD=build] [JOBS=N] [HOST=127.0.0.1] [PORT=8000] [ARGS='...']"
	@echo
	@sed -n 's/^\([a-z-]*\):.*## \(.*\)/  \1|\2/p' $(MAKEFILE_LIST) | \
	  awk -F'|' '{ printf "%-12s %s\n", $$1, $$2 }'
	@echo
	@echo "ARGS goes to the program: make ws-server ARGS='--threads 2', make ws-client ARGS='--json'."

deps: ## install the missing Debian packages (scripts/install-deps.sh)
	@scripts/install-deps.sh

$(BUILD)/build.ninja: | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

build: deps $(BUILD)/build.ninja ## build ws-server, ws-client, the tests and ws-bench (in BUILD)
	cmake --build $(BUILD) -j $(JOBS)

ws-server: build ## run the server in the foreground on HOST:PORT; Ctrl-C stops it gracefully
	$(BUILD)/ws-server --host $(HOST) --port $(PORT) $(ARGS)

ws-client: build check-server ## the original scenario against a running server (make ws-server first)
	$(BUILD)/ws-client --url ws://$(CLIENT_HOST):$(PORT)/ws $(ARGS)

# Says how to start a server, instead of ws-client's "connection refused".
check-server:
	@bash -c 'exec 3<>/dev/tcp/$(CLIENT_HOST)/$(PORT)' 2>/dev/null || { \
	  echo "make ws-client: no server is listening on $(CLIENT_HOST):$(PORT)." >&2; \
	  echo "Start one in another terminal with 'make ws-server' (same PORT), or run 'make demo' for both." >&2; \
	  exit 1; }

demo: build ## server and client in one terminal: start, the scenario, stop
	scripts/demo.sh $(BUILD)

test: build ## the whole test suite through ctest (CTEST_ARGS='-L e2e' selects)
	@scripts/install-deps.sh --interop
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# The whole suite under AddressSanitizer + UBSan, and under ThreadSanitizer
# (the loopback tests run the server on several I/O threads).
test-asan: deps ## the suite under AddressSanitizer + UBSan (build-asan)
	@scripts/install-deps.sh --interop
	cmake --preset asan $(CMAKE_ARGS)
	cmake --build --preset asan -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --preset asan -j $(JOBS) $(CTEST_ARGS)

test-tsan: deps ## the suite under ThreadSanitizer (build-tsan)
	@scripts/install-deps.sh --interop
	cmake --preset tsan $(CMAKE_ARGS)
	cmake --build --preset tsan -j $(JOBS)
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ctest --preset tsan -j $(JOBS) $(CTEST_ARGS)

# A Release build of its own so the numbers are comparable.
bench: deps ## ws-server against the FastAPI and Node peers, side by side (a few minutes)
	@scripts/install-deps.sh --interop
	cmake --preset release $(CMAKE_ARGS)
	cmake --build --preset release -j $(JOBS) --target ws-server ws-bench
	bench/run.sh build-release

FUZZ_SECONDS ?= 60
fuzz: ## the libFuzzer targets (clang-16), FUZZ_SECONDS=60 each over fuzz/corpus/
	@scripts/install-deps.sh --fuzz
	fuzz/run.sh $(FUZZ_SECONDS)

format: ## clang-format every tracked C++ file
	clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean: ## remove the BUILD directory
	rm -rf $(BUILD)
