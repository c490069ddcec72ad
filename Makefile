# agentws: the commands a user needs. Each target installs what is missing
# (scripts/install-deps.sh, Debian packages) and builds before it runs.
BUILD      ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS       ?= $(shell nproc)
HOST       ?= 127.0.0.1
PORT       ?= 8000
CMAKE_ARGS ?=

.PHONY: all deps build ws-server ws-client demo test test-asan test-tsan bench fuzz format clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja: | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# The server in the foreground; Ctrl-C stops it gracefully.
ws-server: build
	$(BUILD)/ws-server --host $(HOST) --port $(PORT) $(ARGS)

# The original scenario against a running server (make ws-server in another terminal).
ws-client: build
	$(BUILD)/ws-client --url ws://localhost:$(PORT)/ws $(ARGS)

# The whole scenario in one terminal: server, client, stop.
demo: build
	scripts/demo.sh $(BUILD)

test: build
	@scripts/install-deps.sh --interop
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# The whole suite under AddressSanitizer + UBSan, and under ThreadSanitizer
# (the loopback tests run the server on several I/O threads).
test-asan: deps
	@scripts/install-deps.sh --interop
	cmake --preset asan $(CMAKE_ARGS)
	cmake --build --preset asan -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --preset asan -j $(JOBS) $(CTEST_ARGS)

test-tsan: deps
	@scripts/install-deps.sh --interop
	cmake --preset tsan $(CMAKE_ARGS)
	cmake --build --preset tsan -j $(JOBS)
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ctest --preset tsan -j $(JOBS) $(CTEST_ARGS)

# ws-server against the FastAPI and Node peers, side by side (a few minutes);
# a Release build of its own so the numbers are comparable.
bench: deps
	@scripts/install-deps.sh --interop
	cmake --preset release $(CMAKE_ARGS)
	cmake --build --preset release -j $(JOBS) --target ws-server ws-bench
	bench/run.sh build-release

# libFuzzer targets (clang-16): each runs FUZZ_SECONDS over its seed corpus.
FUZZ_SECONDS ?= 60
fuzz:
	@scripts/install-deps.sh --fuzz
	fuzz/run.sh $(FUZZ_SECONDS)

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean:
	rm -rf $(BUILD)
