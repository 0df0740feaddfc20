# l2tpu — see README.md. Every target works on a fresh machine as root;
# .ci/run installs what they need.
GO       ?= go
FUZZTIME ?= 30s
PKGS     := ./...

.PHONY: all build test check fuzz bench demo clean

all: build

build:
	CGO_ENABLED=0 $(GO) build $(PKGS)

# The tests. Privileged tests skip when not root, and fail instead when
# L2TPU_REQUIRE_PRIV=1 (CI sets it).
test: check
	$(GO) test -race -count=1 $(PKGS)

check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Every fuzz target for FUZZTIME each (go test runs one target at a time).
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# The wire format in action: encode and decode a frame exactly as the Linux
# kernel does (the demo tunnel arrives with the dataplane and CLI).
demo:
	$(GO) test -count=1 -run '^Example' -v ./encap/

clean:
	$(GO) clean -testcache
