package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/daemon"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

// carrier reports whether ip shows the interface (set up) with a carrier.
func carrier(t *testing.T, ns *privtest.NS, dev string) bool {
	t.Helper()
	out := ns.Run(t, "ip", "-o", "link", "show", dev)
	if !strings.Contains(out, "UP") {
		t.Fatalf("%s is not up: %s", dev, out)
	}
	return !strings.Contains(out, "NO-CARRIER")
}

func wantCarrier(t *testing.T, ns *privtest.NS, dev string, on bool) {
	t.Helper()
	privtest.Eventually(t, 5*time.Second, func() error {
		if got := carrier(t, ns, dev); got != on {
			return fmt.Errorf("%s carrier %v, want %v", dev, got, on)
		}
		return nil
	})
}

// TestCarrier: a session interface has carrier while its tunnel can carry
// traffic, and loses it while the tunnel's local address is gone, whether
// the daemon runs or its restore is pending.
func TestCarrier(t *testing.T) {
	privtest.Require(t)
	ns := cliNS(t)
	if _, errs, code := l2tpu(t, ns, strings.Fields(addTunnel)...); code != 0 {
		t.Fatalf("add tunnel: %s", errs)
	}
	if _, errs, code := l2tpu(t, ns, "add", "session", "tunnel_id", "7", "session_id", "1", "peer_session_id", "1", "name", "pwc0"); code != 0 {
		t.Fatalf("add session: %s", errs)
	}
	ns.Run(t, "ip", "link", "set", "pwc0", "up")
	wantCarrier(t, ns, "pwc0", true)

	ns.Run(t, "ip", "addr", "del", "192.0.2.1/24", "dev", "d0")
	wantCarrier(t, ns, "pwc0", false)
	// A session added meanwhile has none from the start.
	if _, errs, code := l2tpu(t, ns, "add", "session", "tunnel_id", "7", "session_id", "2", "peer_session_id", "2", "name", "pwc1"); code != 0 {
		t.Fatalf("add session: %s", errs)
	}
	ns.Run(t, "ip", "link", "set", "pwc1", "up")
	if carrier(t, ns, "pwc1") {
		t.Fatal("a session added to a tunnel without its address has carrier")
	}
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "d0")
	wantCarrier(t, ns, "pwc0", true)
	wantCarrier(t, ns, "pwc1", true)

	// The daemon dies while the address is gone; the next command starts
	// another, whose restore of the tunnel is pending: the interface stays,
	// without carrier, until the address is back.
	p, err := daemon.PathsAt(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	pid, err := daemon.RecordedPID(p.PID)
	if err != nil {
		t.Fatal(err)
	}
	ns.Run(t, "ip", "addr", "del", "192.0.2.1/24", "dev", "d0")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	privtest.Eventually(t, 5*time.Second, func() error {
		if syscall.Kill(pid, 0) == nil {
			return fmt.Errorf("daemon %d still runs", pid)
		}
		return nil
	})
	wantCarrier(t, ns, "pwc0", false)
	// A pending session is still shown: it was acknowledged.
	if out, errs, code := l2tpu(t, ns, "show", "session"); code != 0 || !strings.Contains(out, "interface name: pwc0") {
		t.Fatalf("show with the restore pending: %q %q %d", out, errs, code)
	}
	wantCarrier(t, ns, "pwc0", false)
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "d0")
	wantCarrier(t, ns, "pwc0", true)
}
