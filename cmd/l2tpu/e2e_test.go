package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/daemon"
	"github.com/l2tpu/l2tpu/internal/netns"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

// pair is two namespaces joined by veth, each to run its own daemon.
func pair(t *testing.T) (*privtest.NS, *privtest.NS) {
	p := privtest.Prefix()
	a, b := privtest.NewNS(t, p+"a"), privtest.NewNS(t, p+"b")
	t.Cleanup(func() { stopDaemon(t, a); stopDaemon(t, b) })
	privtest.Veth(t, a, p+"va", b, p+"vb")
	a.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", p+"va")
	b.Run(t, "ip", "addr", "add", "192.0.2.2/24", "dev", p+"vb")
	return a, b
}

func must(t *testing.T, ns *privtest.NS, args ...string) string {
	t.Helper()
	out, errs, code := l2tpu(t, ns, args...)
	if code != 0 {
		t.Fatalf("l2tpu %s: status %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out
}

func daemonPID(t *testing.T, ns *privtest.NS) int {
	t.Helper()
	p, err := daemon.PathsAt(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	pid, err := daemon.RecordedPID(p.PID)
	if err != nil {
		t.Fatalf("no daemon pid file: %v", err)
	}
	return pid
}

// daemonByHand starts `l2tpu daemon FLAGS` in ns, as a service would, and
// waits until it answers; it ends with the test (SIGTERM).
func daemonByHand(t *testing.T, ns *privtest.NS, flags ...string) *exec.Cmd {
	t.Helper()
	d := exec.Command("ip", append([]string{"netns", "exec", ns.Name, binary(t), "daemon"}, flags...)...)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Signal(syscall.SIGTERM); d.Wait() })
	privtest.Eventually(t, 10*time.Second, func() error {
		if _, errs, code := l2tpu(t, ns, "show", "tunnel"); code != 0 {
			return fmt.Errorf("daemon not answering: %s", errs)
		}
		return nil
	})
	return d
}

func pings(ns *privtest.NS, addr string, n int) int {
	recv, _ := ns.Ping(addr, n)
	return recv
}

// TestEndToEnd: two namespaces configured with l2tpu commands only, one
// daemon each; ping across; kill -9 one daemon; the next command brings it
// back from its state file and the pseudowire works again without touching
// the interfaces, which kept their addresses and MTU.
func TestEndToEnd(t *testing.T) {
	privtest.Require(t)
	a, b := pair(t)
	must(t, a, "add", "tunnel", "tunnel_id", "3000", "peer_tunnel_id", "4000", "encap", "udp",
		"local", "192.0.2.1", "remote", "192.0.2.2", "udp_sport", "5000", "udp_dport", "6000")
	must(t, a, "add", "session", "name", "pw0", "tunnel_id", "3000", "session_id", "1000", "peer_session_id", "2000",
		"cookie", "0123456789abcdef", "peer_cookie", "fedcba98", "seq", "both")
	must(t, b, "add", "tunnel", "session", "tunnel_id", "4000", "peer_tunnel_id", "3000", "encap", "udp",
		"local", "192.0.2.2", "remote", "192.0.2.1", "udp_sport", "6000", "udp_dport", "5000",
		"session_id", "2000", "peer_session_id", "1000", "cookie", "fedcba98", "peer_cookie", "0123456789abcdef", "seq", "both")
	a.Run(t, "ip", "link", "set", "pw0", "mtu", "1400")
	a.Run(t, "ip", "addr", "add", "203.0.113.1/24", "dev", "pw0")
	a.Run(t, "ip", "link", "set", "pw0", "up")
	b.Run(t, "ip", "addr", "add", "203.0.113.2/24", "dev", "l2tpeth0")
	b.Run(t, "ip", "link", "set", "l2tpeth0", "up")
	if n := pings(a, "203.0.113.2", 5); n < 4 {
		t.Fatalf("%d of 5 pings answered", n)
	}

	// Two daemons, one per namespace, each with only its own state.
	pa, pb := daemonPID(t, a), daemonPID(t, b)
	if pa == pb {
		t.Fatal("one daemon for two namespaces")
	}
	if out := must(t, b, "show", "tunnel"); !strings.Contains(out, "Tunnel 4000") || strings.Contains(out, "Tunnel 3000") {
		t.Fatalf("namespace b sees:\n%s", out)
	}
	time.Sleep(1500 * time.Millisecond) // let a sequence-number checkpoint happen

	// Crash.
	if err := syscall.Kill(pa, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && syscall.Kill(pa, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if out := a.Run(t, "ip", "-o", "addr", "show", "pw0"); !strings.Contains(out, "203.0.113.1/24") {
		t.Fatalf("pw0 lost its address with the daemon: %s", out)
	}
	// Any command brings the daemon back, which restores its state.
	if out := must(t, a, "show", "session"); !strings.Contains(out, "interface name: pw0") {
		t.Fatalf("after restart:\n%s", out)
	}
	if daemonPID(t, a) == pa {
		t.Fatal("no new daemon")
	}
	// With sequencing on, the restarted daemon numbers from its last
	// checkpoint plus a margin, and the peer discards what is out of
	// sequence until it resynchronises (after 5, as the kernel does):
	// up to 5 of these pings, since the interface did not flap.
	if n := pings(a, "203.0.113.2", 10); n < 4 {
		t.Fatalf("after restart %d of 10 pings answered", n)
	}
	if out := a.Run(t, "ip", "-o", "link", "show", "pw0"); !strings.Contains(out, "mtu 1400") {
		t.Fatalf("pw0 lost its MTU: %s", out)
	}
	// A clean stop removes what the daemon made.
	stopDaemon(t, a)
	if _, err := a.Try("ip", "link", "show", "pw0"); err == nil {
		t.Fatal("pw0 still there after the daemon stopped")
	}
	if out := must(t, a, "show", "tunnel"); out != "" {
		t.Fatalf("state after a clean stop:\n%s", out)
	}
}

// TestNonRootRefused: an unprivileged caller may neither change nor look
// (show reveals cookies): the kernel's genl L2TP operations all need
// CAP_NET_ADMIN, and ip l2tp's texts and statuses for the refusals are
// these (checked against the real kernel by make interop).
func TestNonRootRefused(t *testing.T) {
	privtest.Require(t)
	ns := cliNS(t)
	bin := binary(t)
	as := func(args ...string) (string, int) {
		out, err := asNobody(ns, append([]string{bin}, args...)...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return string(out), code
	}
	// No daemon yet: not root, so none is started.
	if out, code := as("add", "tunnel", "tid", "1", "ptid", "2", "encap", "ip", "local", "192.0.2.1", "remote", "198.51.100.1"); code != 2 || out != "RTNETLINK answers: Operation not permitted\n" {
		t.Fatalf("status %d: %q", code, out)
	}
	must(t, ns, "add", "tunnel", "tid", "1", "ptid", "2", "encap", "ip", "local", "192.0.2.1", "remote", "198.51.100.1")
	for _, args := range [][]string{
		{"add", "tunnel", "tid", "3", "ptid", "4", "encap", "ip", "local", "192.0.2.1", "remote", "198.51.100.1"},
		{"add", "session", "tid", "1", "sid", "1", "psid", "1"},
		{"del", "tunnel", "tid", "1"},
	} {
		if out, code := as(args...); code != 2 || out != "RTNETLINK answers: Operation not permitted\n" {
			t.Fatalf("%v: status %d: %q", args, code, out)
		}
	}
	for _, what := range []string{"tunnel", "session"} {
		if out, code := as("show", what); code != 1 || out != "RTNETLINK answers: Operation not permitted\nDump terminated\n" {
			t.Fatalf("show %s as nobody: %d %q", what, code, out)
		}
	}
	if out, code := as("-j", "show", "tunnel"); code != 1 || out != "[RTNETLINK answers: Operation not permitted\nDump terminated\n" {
		t.Fatalf("-j show as nobody: %d %q", code, out)
	}
	// The positive control: root sees the tunnel, cookies and all.
	if out := must(t, ns, "show", "tunnel"); !strings.HasPrefix(out, "Tunnel 1, encap IP") {
		t.Fatalf("show as root: %q", out)
	}
	if out := must(t, ns, "show", "tunnel"); strings.Count(out, "Tunnel ") != 1 {
		t.Fatalf("state changed:\n%s", out)
	}
}

// TestControlSocketAbuse: garbage, oversized, malformed and half requests
// get errors or are dropped; the daemon lives on with its state unchanged.
func TestControlSocketAbuse(t *testing.T) {
	privtest.Require(t)
	ns := cliNS(t)
	must(t, ns, "add", "tunnel", "tid", "1", "ptid", "2", "encap", "ip", "local", "192.0.2.1", "remote", "198.51.100.1")
	before := must(t, ns, "-j", "show", "tunnel")
	pid := daemonPID(t, ns)
	send := func(payload []byte, read bool) string {
		var c *net.UnixConn
		if err := netns.Do(ns.Path(), func() (err error) {
			c, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: daemon.SocketName, Net: "unix"})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(payload)
		if !read {
			return ""
		}
		c.CloseWrite()
		b := make([]byte, 4096)
		n, _ := c.Read(b)
		return string(b[:n])
	}
	big := make([]byte, 2*daemon.MaxRequest)
	for i := range big {
		big[i] = '['
	}
	deep := strings.Repeat("[", 100000)
	for _, p := range []string{
		"\x00\x01\x02garbage\xff",
		"{",
		`{"op":"add_tunnel"}`,
		`{"op":"add_tunnel","tunnel":{"TunnelID":"x"}}`,
		`{"op":"add_tunnel","tunnel":{"TunnelID":9,"PeerTunnelID":9,"Encap":7,"Local":"192.0.2.1","Remote":"198.51.100.1"}}`,
		`{"op":"add_session","session":{"TunnelID":1,"SessionID":5,"PeerSessionID":5,"Name":"../../x"}}`,
		`{"op":"add_session","session":{"TunnelID":1,"SessionID":5,"PeerSessionID":5,"Cookie":"zz"}}`,
		`{"op":"del_tunnel","tunnel_id":99}`,
		`{"op":"explode"}`,
		`{"op":"list","extra":1}`,
		`null`,
		`[]`,
		deep,
		string(big),
	} {
		resp := send([]byte(p), true)
		var r daemon.Response
		if resp != "" {
			if err := json.Unmarshal([]byte(resp), &r); err != nil || r.Errno == 0 {
				t.Errorf("request %.40q: answer %q", p, resp)
			}
		}
	}
	// Connections that send half a request and go away, many at once.
	for i := 0; i < 50; i++ {
		send([]byte(`{"op":"add_tun`), false)
	}
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("daemon died")
	}
	if daemonPID(t, ns) != pid {
		t.Fatal("daemon was replaced")
	}
	if after := must(t, ns, "-j", "show", "tunnel"); after != before {
		t.Fatalf("state changed:\n%s\n%s", before, after)
	}
}

// TestGroupAccess: with -group, the group's members may use l2tpu, by
// their primary group or a supplementary one; other users may not, and
// without -group no one but root may (each case run as the user nobody).
func TestGroupAccess(t *testing.T) {
	privtest.Require(t)
	bin := binary(t)
	as := func(ns *privtest.NS, ids []string, args ...string) result {
		argv := append([]string{"ip", "netns", "exec", ns.Name, "setpriv", "--reuid", "nobody"}, ids...)
		return runCmd(t, nil, append(append(argv, "--", bin), args...)...)
	}
	primary := []string{"--regid", "users", "--clear-groups"}
	supplementary := []string{"--regid", "nogroup", "--groups", "users"}
	other := []string{"--regid", "nogroup", "--clear-groups"}
	refused := "RTNETLINK answers: Operation not permitted\nDump terminated\n"

	// Without -group (a daemon started on demand): members are refused too.
	ns := cliNS(t)
	must(t, ns, "add", "tunnel", "tid", "1", "ptid", "2", "encap", "ip", "local", "192.0.2.1", "remote", "198.51.100.1")
	for _, ids := range [][]string{primary, supplementary} {
		if r := as(ns, ids, "show", "tunnel"); r.code != 1 || r.err != refused {
			t.Fatalf("%v without -group: %+v", ids, r)
		}
	}

	// With -group users.
	ng := cliNS(t)
	daemonByHand(t, ng, "-group", "users")
	for _, ids := range [][]string{primary, supplementary} {
		if r := as(ng, ids, "add", "tunnel", "tid", "5", "ptid", "6", "encap", "ip", "local", "192.0.2.1", "remote", "198.51.100.1"); r.code != 0 && !strings.Contains(r.err, "File exists") {
			t.Fatalf("%v add with -group: %+v", ids, r)
		}
		if r := as(ng, ids, "show", "tunnel"); r.code != 0 || !strings.Contains(r.out, "Tunnel 5") {
			t.Fatalf("%v show with -group: %+v", ids, r)
		}
	}
	if r := as(ng, other, "show", "tunnel"); r.code != 1 || r.err != refused {
		t.Fatalf("a non-member with -group: %+v", r)
	}
}
