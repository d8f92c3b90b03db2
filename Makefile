# Convenience targets; CI runs .ci/run.
GO ?= go

.PHONY: build test check bench fuzz bench-report test-cluster chaos soak
build:
	$(GO) build -o bin/minuted ./cmd/minuted

test:
	$(GO) test -race ./...

# The cluster suite: 3-node NATS cluster (JetStream R3) and a 6-node Redis
# Cluster started from the real binaries, minuted instances on top, node
# failures under load. Every server is a child of the test and is killed
# when it ends.
test-cluster:
	$(GO) test -race -tags cluster -count=1 -timeout 15m -v -run 'Cluster' ./internal/clustertest/

check:
	test -z "$$(gofmt -l .)"
	$(GO) vet ./...

# Micro-benchmarks of the hot paths, with allocations.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...

# The whole pipeline on this machine (ARI double → ingest → nats-server →
# bill → redis-server), ~15 min; writes docs/benchmarks.md and .json.
bench-report:
	$(GO) run ./cmd/minuted load -report docs/benchmarks.md

# Each fuzz target for 30s.
fuzz:
	@for pkg in $$($(GO) list ./internal/...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 30s $$pkg || exit 1; \
	  done; \
	done

# Chaos suite: real minuted processes under every fault kind, invariants
# checked (CI size). MINUTED_CHAOS_FAULTS=basic leaves out kill -9 of ingest
# and NATS restarts.
chaos:
	$(GO) test -race -count=1 -v -run '^TestChaos$$' ./internal/chaos

# Soak: >=100,000 calls, every fault kind.
soak:
	MINUTED_CHAOS_CALLS=$${MINUTED_CHAOS_CALLS:-100000} MINUTED_CHAOS_DURATION=$${MINUTED_CHAOS_DURATION:-4m} \
	  $(GO) test -count=1 -v -timeout 60m -run '^TestChaos$$' ./internal/chaos
