# concbench — two commands do everything on a fresh Debian 12 machine:
#   make bench   install what is missing, build, run the quick profile, draw the plots
#   make test    install what is missing, build, run every test
PROFILE ?= quick
BUILD   ?= build
JOBS    ?= $(shell nproc)
SANITIZE ?=
PYTHON  := /usr/bin/python3
comma := ,
MAKEFLAGS += --no-print-directory
ifneq ($(SANITIZE),)
BUILD := build-$(subst $(comma),-,$(SANITIZE))
endif
CONCBENCH := $(BUILD)/bin/concbench

.PHONY: all deps build bench bench-classic test list plot summary clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DSANITIZE=$(SANITIZE) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

bench: build
	@rc=0; $(CONCBENCH) run --profile $(PROFILE) || rc=$$?; \
	if [ $$rc -eq 130 ] || [ $$rc -eq 2 ]; then exit $$rc; fi; \
	$(PYTHON) scripts/plot.py results/latest || exit $$?; \
	$(PYTHON) scripts/summary.py results/latest || exit $$?; \
	echo "bench: results in results/latest/results.jsonl, plots in results/latest/plots/"; \
	exit $$rc

# The classic comparison: real nginx and Apache (prefork, worker, event) beside every model of
# ours, keep-alive GET / at 10 ... 10,000 connections; draws classic-throughput.png and
# classic-pss.png. Ctrl-C stops the running server (and leaves no nginx or Apache behind).
bench-classic: build
	@rc=0; $(CONCBENCH) run --profile classic || rc=$$?; \
	if [ $$rc -eq 130 ] || [ $$rc -eq 2 ]; then exit $$rc; fi; \
	$(PYTHON) scripts/plot.py results/latest --classic hello || exit $$?; \
	$(PYTHON) scripts/summary.py results/latest || exit $$?; \
	echo "bench-classic: results in results/latest/results.jsonl; classic charts: results/latest/plots/classic-throughput.png, classic-pss.png"; \
	exit $$rc

plot:
	@$(PYTHON) scripts/plot.py results/latest

summary:
	@$(PYTHON) scripts/summary.py results/latest

test: build
	@cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 600

list: build
	@$(CONCBENCH) list

clean:
	rm -rf build build-*
