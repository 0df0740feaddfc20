# l2tpu — see README.md. Every target works on a fresh machine as root;
# .ci/run installs what they need.
GO       ?= go
FUZZTIME ?= 30s
PKGS     := ./...
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
PREFIX   ?= /usr/local
# staticcheck, pinned: `go run` fetches this version through the module proxy.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
DESTDIR  ?=

.PHONY: all build test check fuzz bench bench-idle bench-ipfloor microbench demo interop install install-shims install-ip-shim uninstall clean

all: build

# A static binary: no cgo, runs on any Linux with /dev/net/tun.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/l2tpu ./cmd/l2tpu
	$(GO) build $(PKGS)

# The tests. Privileged tests skip when not root, and fail instead when
# L2TPU_REQUIRE_PRIV=1 (CI sets it).
test: check
	.ci/deps.sh || [ "$$(id -u)" -ne 0 ]
	$(GO) test -race -count=1 $(PKGS)

check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

# Every fuzz target for FUZZTIME each (go test runs one target at a time).
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

# Throughput, 64-byte rate and RTT through direct veth, kernel VXLAN, QEMU
# l2tpv3 and l2tpu between two namespaces: build/bench/results.{md,json,svg}.
bench: build
	.ci/deps.sh bench
	$(GO) run ./bench -t 5 -o build/bench -l2tpu bin/l2tpu

# One l2tpu pseudowire under mixed load (bulk TCP, small UDP, ping) for
# DURATION, sampling RSS, goroutines, threads, fds and counters every
# minute; fails on unbounded growth or unexplained loss (build/bench/soak/).
DURATION ?= 30m
soak: build
	.ci/deps.sh bench
	$(GO) run ./bench -soak $(DURATION) -o build/bench -l2tpu bin/l2tpu

# The floor under IP encapsulation: one thread sending 1400-byte messages
# to a veth peer by a protocol-115 socket, IPPROTO_RAW, AF_PACKET, UDP and
# UDP GSO (bench/ipfloor; README, "IP encapsulation").
bench-ipfloor:
	$(GO) run ./bench/ipfloor

# SESSIONS (10,000) idle sessions in one daemon: seconds per 1,000 added,
# memory a session, idle CPU, removal time.
SESSIONS ?= 10000
bench-idle: build
	scripts/idle-sessions.sh bin/l2tpu 1 $(SESSIONS)

# The Go benchmarks of the hot paths (ns/op, allocs/op; benchstat-ready).
microbench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $(PKGS)

# Two namespaces, a pseudowire set up with l2tpu commands, ping, counters.
demo: build
	.ci/deps.sh
	scripts/demo.sh

# l2tpu against the real Linux kernel (Debian's, in a QEMU VM) and QEMU's
# l2tpv3 backend: every parameter combination. Writes build/interop-results.md.
interop:
	.ci/deps.sh interop
	L2TPU_INTEROP=1 L2TPU_INTEROP_OUT=$(CURDIR)/build/interop-results.md \
	  $(GO) test -count=1 -v -timeout 40m -run '^TestInterop$$' ./interop/

install: build
	install -D -m 0755 bin/l2tpu $(DESTDIR)$(PREFIX)/sbin/l2tpu
	install -D -m 0644 man/l2tpu.8 $(DESTDIR)$(PREFIX)/share/man/man8/l2tpu.8
	install -D -m 0644 dist/l2tpu.service $(DESTDIR)/etc/systemd/system/l2tpu.service
	[ -e $(DESTDIR)/etc/l2tpu/l2tpu.conf ] || install -D -m 0600 dist/l2tpu.conf $(DESTDIR)/etc/l2tpu/l2tpu.conf

# The shims, in PREFIX/sbin (before /usr/sbin and /usr/bin on PATH): `ip`
# runs l2tpu, which serves `ip l2tp ...` and hands all else to the system's
# ip; `modprobe` answers the kernel's L2TPv3 modules and hands all else to
# the system's modprobe. See README.md, "Unmodified ip l2tp tooling".
SHIMS := ip modprobe
# A shim never replaces a program of the system's (PREFIX=/usr would make
# the kernel's own module requests, through /sbin/modprobe, reach it).
install-shims: install
	@for s in $(SHIMS); do t=$(DESTDIR)$(PREFIX)/sbin/$$s; \
	  if [ -e "$$t" ] && [ "$$(readlink "$$t")" != l2tpu ]; then \
	    echo "install-shims: $$t exists and is not l2tpu's; choose another PREFIX (before the system's on PATH)" >&2; exit 1; fi; done
	for s in $(SHIMS); do ln -sfn l2tpu $(DESTDIR)$(PREFIX)/sbin/$$s; done

# The ip shim alone.
install-ip-shim: install
	$(MAKE) install-shims SHIMS=ip

uninstall:
	for s in $(SHIMS); do [ "$$(readlink $(DESTDIR)$(PREFIX)/sbin/$$s)" != l2tpu ] || rm -f $(DESTDIR)$(PREFIX)/sbin/$$s; done
	rm -f $(DESTDIR)$(PREFIX)/sbin/l2tpu $(DESTDIR)$(PREFIX)/share/man/man8/l2tpu.8 $(DESTDIR)/etc/systemd/system/l2tpu.service

clean:
	rm -rf bin
	$(GO) clean -testcache
