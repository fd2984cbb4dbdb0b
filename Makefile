# concbench — two commands do everything on a fresh Debian 12 machine:
#   make bench   install what is missing, build, run the quick profile, draw the plots
#   make test    install what is missing, build, run every test
PROFILE ?= quick
BUILD   ?= build
JOBS    ?= $(shell nproc)
SANITIZE ?=
FUZZ_SECONDS ?= 60
PYTHON  := /usr/bin/python3
comma := ,
MAKEFLAGS += --no-print-directory
ifneq ($(SANITIZE),)
BUILD := build-$(subst $(comma),-,$(SANITIZE))
endif
CONCBENCH := $(BUILD)/bin/concbench

.PHONY: all deps build bench bench-classic micro test list plot summary report compare clean fuzz iocp

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DSANITIZE=$(SANITIZE) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

bench: build
	@rc=0; $(CONCBENCH) run --profile $(PROFILE) || rc=$$?; \
	if [ $$rc -eq 130 ] || [ $$rc -eq 2 ]; then exit $$rc; fi; \
	mrc=0; $(CONCBENCH) micro --short --run latest || mrc=$$?; \
	if [ $$mrc -eq 130 ]; then exit 130; fi; \
	$(PYTHON) scripts/plot.py results/latest --classic auto || exit $$?; \
	$(PYTHON) scripts/summary.py results/latest || exit $$?; \
	$(PYTHON) scripts/report.py results/latest || exit $$?; \
	echo "bench: results in results/latest/results.jsonl, plots in results/latest/plots/ (classic-cpu.png first: server CPU per request), the report in results/latest/report.html"; \
	if [ $$rc -eq 1 ]; then echo "bench: some cells failed — each with its reason in the summary above (a pool that cannot hold 10,000 idle connections fails there: that is its result)"; rc=0; fi; \
	exit $$rc

# The classic comparison: real nginx and Apache (prefork, worker, event) beside every model of
# ours, keep-alive GET / at 10 ... 10,000 connections, 3 repetitions; draws classic-cpu.png,
# classic-throughput.png and classic-pss.png. Ctrl-C stops the running server (and leaves no
# nginx or Apache behind); `build/bin/concbench run --resume <run-id>` continues.
bench-classic: build
	@rc=0; $(CONCBENCH) run --profile classic || rc=$$?; \
	if [ $$rc -eq 130 ] || [ $$rc -eq 2 ]; then exit $$rc; fi; \
	$(PYTHON) scripts/plot.py results/latest --classic hello || exit $$?; \
	$(PYTHON) scripts/summary.py results/latest || exit $$?; \
	$(PYTHON) scripts/report.py results/latest || exit $$?; \
	echo "bench-classic: results in results/latest/results.jsonl; classic charts: results/latest/plots/classic-cpu.png, classic-throughput.png, classic-pss.png; the report: results/latest/report.html"; \
	if [ $$rc -eq 1 ]; then echo "bench-classic: some cells failed — each with its reason in the summary above; the charts mark where each line stops and why"; rc=0; fi; \
	exit $$rc

# The micro suite (Google Benchmark): creation, switching, waiting on many fds, memory per unit
# and Dahl's latency table, 3 repetitions, into a run of its own (results/latest/micro.json);
# draws plots/micro-*.png and plots/latency-table.png. MICRO_ARGS="--filter wait/" runs a part.
micro: build
	@rc=0; $(CONCBENCH) micro $(MICRO_ARGS) || rc=$$?; \
	if [ $$rc -eq 130 ] || [ $$rc -eq 2 ]; then exit $$rc; fi; \
	$(PYTHON) scripts/plot.py results/latest || exit $$?; \
	exit $$rc

plot:
	@$(PYTHON) scripts/plot.py results/latest --classic auto

summary:
	@$(PYTHON) scripts/summary.py results/latest

# One self-contained page of a run (default latest): environment, headline, every chart inline,
# summary tables, model notes and the essays' claims judged; BASELINE=<run> adds a comparison.
RUN ?= latest
report:
	@$(PYTHON) scripts/report.py $(RUN) $(if $(BASELINE),--baseline $(BASELINE))

# Two runs cell by cell: the ratio of each figure and whether it exceeds the repetitions' spread.
compare:
	@if [ -z "$(A)" ] || [ -z "$(B)" ]; then echo "usage: make compare A=<run> B=<run>" >&2; exit 2; fi
	@$(PYTHON) scripts/compare.py $(A) $(B)

# Instrumented builds stop at the first sanitizer report (UBSan would otherwise only print), in
# the tests and in every server they start (they inherit the environment). SANITIZE=thread runs
# the tests labelled `tsan` — those that start threads: not the single-threaded unit tests.
TEST_LABELS := $(if $(findstring thread,$(SANITIZE)),-L tsan)
test: build
	@cd $(BUILD) && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --output-on-failure -j 2 --timeout 900 $(TEST_LABELS)

# libFuzzer (clang) over the HTTP and echo sessions for FUZZ_SECONDS; new inputs it finds go
# to build-fuzz/corpus, a crash to build-fuzz/crash-* (keep it in tests/fuzz/crashes/ once fixed).
fuzz: deps
	@cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang \
	  -DCMAKE_CXX_COMPILER=clang++ -DCONCBENCH_FUZZ=ON -DBUILD_TESTING=OFF >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target fuzz_session
	@mkdir -p build-fuzz/corpus
	build-fuzz/bin/fuzz_session -max_total_time=$(FUZZ_SECONDS) -timeout=30 -rss_limit_mb=4096 \
	  -artifact_prefix=build-fuzz/ -print_final_stats=1 build-fuzz/corpus tests/fuzz/corpus

# The IOCP model (models/iocp) alone, cross-built for Windows with mingw-w64: a static .exe to
# copy to a Windows machine (the main build also makes it, with a Wine launcher, when it can).
iocp:
	@cmake -S models/iocp/cross -B build-iocp-win -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/cmake/mingw-w64-x86_64.cmake >/dev/null
	@cmake --build build-iocp-win -j $(JOBS)
	@echo "iocp: build-iocp-win/server-iocp.exe"

list: build
	@$(CONCBENCH) list

clean:
	rm -rf build build-*
