# Convenience targets; CI runs .ci/run.
GO ?= go

.PHONY: build test check bench fuzz
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
