# jetserve — the two commands a newcomer needs are `make dev` and `make test`.
SHELL := /bin/bash
GO ?= go
# Extra flags for go test, e.g. make test TESTFLAGS='-race -short'.
TESTFLAGS ?=
MODULES = $(shell $(GO) list -m -f '{{.Dir}}')

.PHONY: dev test vet standalone fmt duplicates e2e chaos bench schemas errors metrics-lint python-deps help

help:
	@echo "make dev      run the whole fleet in one process (embedded NATS) with the example app"
	@echo "make test     every module's tests (TESTFLAGS='-race -short' as CI does)"
	@echo "make vet      go vet every module"
	@echo "make duplicates  the places where code repeats (the duplicates tool), to factor into shared helpers"
	@echo "make e2e      the end-to-end suite: real binaries as separate processes (installs the Python example's Debian packages first)"
	@echo "make chaos    the HA fleet on loopback under load, faults at random (CHAOS_DURATION=3m, CHAOS_SEED=…)"
	@echo "make bench    fleet vs raw HTTP / raw NATS / raw JetStream, side by side"
	@echo "make metrics-lint  promtool's metric checks on every service's /metrics (part of make test)"
	@echo "make errors   regenerate pkg/protocol/errors_gen.go from schemas/errors.json"
	@echo "make fuzz     every fuzz target for FUZZTIME (default 10s) each"
	@echo "make bins     every binary (jetserve, jetserve-<service>, jetserve-auth, nats-server) into bin/"
	@echo "make images   build the container images (no registry pulls)"
	@echo "make compose-test  docker compose smoke test"

dev:
	$(GO) run ./cmd/jetserve dev

test:
	@set -e; for d in $(MODULES); do \
		echo "== go test $$d"; \
		(cd $$d && $(GO) test $(TESTFLAGS) ./...); \
	done

vet:
	@set -e; for d in $(MODULES); do (cd $$d && $(GO) vet ./...); done

# Each module must build on its own (a service image is built from its
# module alone), not only through go.work.
standalone:
	@set -e; for d in $(MODULES); do echo "== GOWORK=off go vet $$d"; (cd $$d && GOWORK=off $(GO) vet ./...); done

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Where the tree repeats itself: pairs of places sharing 6+ lines (a row
# is a place to look, not a verdict; Go import blocks and struct or YAML
# shapes are expected). Needs the duplicates tool on PATH.
duplicates:
	@command -v duplicates >/dev/null || { echo "the duplicates tool is not on PATH"; exit 1; }
	duplicates --most 200 --seconds 120

# The Python example (examples/digits) needs Debian's python3-numpy and
# python3-sklearn; the e2e suite deploys it.
python-deps:
	./scripts/python-deps.sh

e2e: python-deps
	cd e2e && $(GO) test -count=1 -timeout 20m ./...

# The chaos suite (e2e/chaos_test.go): starts the HA fleet itself on
# loopback (3 NATS nodes, every service twice, three workers), drives sync
# load and a stream of jobs, injects faults at random for CHAOS_DURATION
# and prints the table per fault kind. CHAOS_SEED replays an order (the
# seed is printed); CHAOS_REPORT=FILE also writes the table there;
# CHAOS_SAMPLES=FILE lists the faults and every failed or > 2 s request
# (with its X-Request-Id, which the services log); CHAOS_FAULTS="kill -9
# worker,…" limits the fault kinds.
CHAOS_DURATION ?= 3m
CHAOS_SEED ?=
CHAOS_REPORT ?=
CHAOS_SAMPLES ?=
CHAOS_FAULTS ?=
CHAOS_TIMEOUT ?= 90m
chaos:
	cd e2e && CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_SEED=$(CHAOS_SEED) CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) CHAOS_SAMPLES=$(abspath $(CHAOS_SAMPLES)) CHAOS_FAULTS="$(CHAOS_FAULTS)" \
		$(GO) test -count=1 -run '^TestChaos$$' -timeout $(CHAOS_TIMEOUT) -v ./

bench:
	./scripts/bench.sh

fuzz:
	./scripts/fuzz.sh

schemas:
	cd pkg && $(GO) test ./protocol -update

# pkg/protocol/errors_gen.go from schemas/errors.json (TestErrorCatalogueGenerated
# fails when it is stale).
errors:
	cd pkg && $(GO) generate ./protocol

# What `promtool check metrics` checks (promlint), on every service's live
# /metrics after real traffic, and the label vocabulary; part of make test.
metrics-lint:
	cd deploy/test && $(GO) test -count=1 -run 'TestLintMetricsCatchesViolations|TestGrafanaQueriesNameRealMetrics' .

-include deploy/make.mk
