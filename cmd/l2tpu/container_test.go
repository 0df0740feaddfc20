package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/internal/privtest"
)

var capexecTool = &builtTool{pkg: "../../internal/capexec", name: "capexec", args: []string{"-ldflags", "-s -w"}}

// inContainer runs the binary as the README's container recipe does: in
// the namespace, in a root file system holding only the static binary,
// /dev/net/tun, /dev/null and /proc, as root with no capability but caps
// (the bounding set, as `docker run --cap-drop ALL --cap-add ...`). Each
// call is a fresh container (like `docker exec`); the daemon the first
// starts keeps its own.
func inContainer(t *testing.T, ns *privtest.NS, caps string, args ...string) result {
	t.Helper()
	script := `root=$(mktemp -d)
mount -t tmpfs -o mode=0755 l2tpu-root "$root"
mkdir -p "$root/dev/net" "$root/proc" "$root/run" "$root/tmp"
cp "$BIN" "$root/l2tpu"
cp "$CAPEXEC" "$root/capexec"
touch "$root/dev/net/tun" "$root/dev/null"
mount --bind /dev/net/tun "$root/dev/net/tun"
mount --bind /dev/null "$root/dev/null"
mount -t proc proc "$root/proc"
exec chroot "$root" /capexec ` + caps + ` -- /l2tpu "$@"`
	argv := append([]string{"ip", "netns", "exec", ns.Name, "unshare", "-m", "--propagation", "private", "sh", "-ec", script, "sh"}, args...)
	return runCmd(t, []string{"BIN=" + binary(t), "CAPEXEC=" + capexecTool.get(t)}, argv...)
}

// daemonIn finds the l2tpu daemon whose network namespace is ns's.
func daemonIn(t *testing.T, ns *privtest.NS) int {
	t.Helper()
	st, err := os.Stat(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	var self os.FileInfo
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		if self, err = os.Stat(d + "/ns/net"); err != nil || !os.SameFile(st, self) {
			continue
		}
		if cmd, _ := os.ReadFile(d + "/cmdline"); strings.HasPrefix(string(cmd), "/l2tpu\x00daemon") {
			pid, _ := strconv.Atoi(filepath.Base(d))
			return pid
		}
	}
	t.Fatalf("no daemon in %s", ns.Name)
	return 0
}

// capEff is a process's effective capability set.
func capEff(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:\t"); ok {
			n, _ := strconv.ParseUint(v, 16, 64)
			return n
		}
	}
	t.Fatal("no CapEff")
	return 0
}

const (
	capNetAdmin = 1 << 12
	capNetRaw   = 1 << 13
)

// TestContainerPrivileges: the README's container recipe, for real. With
// only CAP_NET_ADMIN and /dev/net/tun, in a root holding nothing but the
// static binary, a UDP pseudowire works end to end; IP encapsulation says
// it needs CAP_NET_RAW, and works with it.
func TestContainerPrivileges(t *testing.T) {
	privtest.Require(t)
	a, b := pair(t)
	stop := func(ns *privtest.NS, caps string) {
		if r := inContainer(t, ns, caps, "daemon", "stop"); r.code != 0 {
			t.Errorf("daemon stop: %+v", r)
		}
	}
	sides := []struct {
		ns                *privtest.NS
		tid, ptid, local  string
		remote, sid, psid string
	}{
		{a, "1", "2", "192.0.2.1", "192.0.2.2", "10", "20"},
		{b, "2", "1", "192.0.2.2", "192.0.2.1", "20", "10"},
	}
	for i, s := range sides {
		r := inContainer(t, s.ns, "net_admin", "add", "tunnel", "session", "tunnel_id", s.tid, "peer_tunnel_id", s.ptid,
			"local", s.local, "remote", s.remote, "udp_sport", "1701", "udp_dport", "1701",
			"session_id", s.sid, "peer_session_id", s.psid, "name", "pwk0")
		if r.code != 0 {
			t.Fatalf("add in a container with CAP_NET_ADMIN only: %+v", r)
		}
		defer stop(s.ns, "net_admin")
		s.ns.Run(t, "ip", "addr", "add", fmt.Sprintf("203.0.113.%d/24", i+1), "dev", "pwk0")
		s.ns.Run(t, "ip", "link", "set", "pwk0", "up")
		wantCaps(t, s.ns, capNetAdmin, "CAP_NET_ADMIN only")
	}
	if n := pings(a, "203.0.113.2", 5); n < 4 {
		t.Fatalf("%d of 5 pings answered through containers", n)
	}
	if r := inContainer(t, a, "net_admin", "show", "session", "tunnel_id", "1"); r.code != 0 || !strings.Contains(r.out, "interface name: pwk0") {
		t.Fatalf("show: %+v", r)
	}
	ip := []string{"add", "tunnel", "tunnel_id", "9", "peer_tunnel_id", "9", "local", "192.0.2.1", "remote", "192.0.2.2", "encap", "ip"}
	if r := inContainer(t, a, "net_admin", ip...); r.code != 2 || !strings.Contains(r.err, "needs CAP_NET_RAW") {
		t.Fatalf("IP encapsulation without CAP_NET_RAW: %+v", r)
	}
	// With CAP_NET_RAW as well (a daemon started with it).
	stop(b, "net_admin")
	privtest.Eventually(t, 5*time.Second, func() error {
		if _, err := b.Try("ip", "link", "show", "pwk0"); err == nil {
			return fmt.Errorf("pwk0 still there")
		}
		return nil
	})
	ip[7], ip[9] = "192.0.2.2", "192.0.2.1"
	if r := inContainer(t, b, "net_admin,net_raw", ip...); r.code != 0 {
		t.Fatalf("IP encapsulation with CAP_NET_RAW: %+v", r)
	}
	wantCaps(t, b, capNetAdmin|capNetRaw, "CAP_NET_ADMIN and CAP_NET_RAW")
}

// wantCaps: the daemon in ns comes to hold exactly want. Eventually,
// because the process found can be a daemon still starting, which holds
// CAP_CHOWN (0x1) for a moment (seen 1 run in ~20 under load).
func wantCaps(t *testing.T, ns *privtest.NS, want uint64, says string) {
	t.Helper()
	privtest.Eventually(t, 3*time.Second, func() error {
		if c := capEff(t, daemonIn(t, ns)); c != want {
			return fmt.Errorf("the daemon's effective capabilities are %#x, want %s", c, says)
		}
		return nil
	})
}
