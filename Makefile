# Convenience targets; CI runs .ci/run.
GO ?= go

.PHONY: build test check bench fuzz chaos soak
build:
	$(GO) build -o bin/minuted ./cmd/minuted

test:
	$(GO) test -race ./...

check:
	test -z "$$(gofmt -l .)"
	$(GO) vet ./...

# Micro-benchmarks of the hot paths, with allocations.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...

# Each fuzz target for 30s.
fuzz:
	@for pkg in $$($(GO) list ./internal/...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 30s $$pkg || exit 1; \
	  done; \
	done

# Chaos suite: real minuted processes under faults, invariants checked (CI size).
chaos:
	$(GO) test -race -count=1 -v -run '^TestChaos$$' ./internal/chaos

# Soak: >=100,000 calls, every fault kind, known defects fatal (MINUTED_CHAOS_STRICT).
soak:
	MINUTED_CHAOS_CALLS=$${MINUTED_CHAOS_CALLS:-100000} MINUTED_CHAOS_DURATION=$${MINUTED_CHAOS_DURATION:-4m} MINUTED_CHAOS_STRICT=$${MINUTED_CHAOS_STRICT:-1} \
	  $(GO) test -count=1 -v -timeout 60m -run '^TestChaos$$' ./internal/chaos
