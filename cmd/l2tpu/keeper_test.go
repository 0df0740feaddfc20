package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/daemon"
	"github.com/l2tpu/l2tpu/internal/netns"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

// pseudowire makes a UDP pseudowire between the namespaces of pair, a
// cookie each way, 203.0.113.1 (pw0, in a) to 203.0.113.2 (pw1, in b).
func pseudowire(t *testing.T, a, b *privtest.NS, seq ...string) {
	t.Helper()
	must(t, a, "add", "tunnel", "tunnel_id", "1", "peer_tunnel_id", "2", "encap", "udp",
		"local", "192.0.2.1", "remote", "192.0.2.2", "udp_sport", "5000", "udp_dport", "6000")
	must(t, a, append([]string{"add", "session", "name", "pw0", "tunnel_id", "1", "session_id", "10", "peer_session_id", "20",
		"cookie", "0011223344556677", "peer_cookie", "8899aabb"}, seq...)...)
	must(t, b, "add", "tunnel", "tunnel_id", "2", "peer_tunnel_id", "1", "encap", "udp",
		"local", "192.0.2.2", "remote", "192.0.2.1", "udp_sport", "6000", "udp_dport", "5000")
	must(t, b, append([]string{"add", "session", "name", "pw1", "tunnel_id", "2", "session_id", "20", "peer_session_id", "10",
		"cookie", "8899aabb", "peer_cookie", "0011223344556677"}, seq...)...)
	a.Run(t, "ip", "addr", "add", "203.0.113.1/24", "dev", "pw0")
	a.Run(t, "ip", "link", "set", "pw0", "up")
	b.Run(t, "ip", "addr", "add", "203.0.113.2/24", "dev", "pw1")
	b.Run(t, "ip", "link", "set", "pw1", "up")
	if n := pings(a, "203.0.113.2", 3); n != 3 {
		t.Fatalf("%d of 3 pings answered", n)
	}
}

// keeperPID is the PID of the namespace's descriptor keeper (0: none).
func keeperPID(t *testing.T, ns *privtest.NS) int {
	t.Helper()
	p, err := daemon.PathsAt(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	out, _ := ns.Try("ss", "-xlpH", "src", p.Keeper)
	m := regexp.MustCompile(`pid=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// squatUDP tries, as nobody, to bind the tunnel's local address and port
// in ns, and reports the attacker's lines: "ok" and "received N", or the
// bind error.
func squatUDP(t *testing.T, ns *privtest.NS) []string {
	t.Helper()
	out, err := asNobody(ns, attacker(t), "udp", "192.0.2.1:5000").Output()
	if err != nil {
		t.Fatalf("attacker: %v %s", err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// TestPortHeldAcrossCrash: between kill -9 of the daemon and its restart,
// the tunnel's port stays taken, as the kernel's socket would (the keeper
// holds it): nobody cannot bind it, though the peer sends all along; the
// restarted daemon carries on with the same socket. The control: with the
// keeper killed too (as before keepers), nobody binds the port and
// receives the peer's frames, cookie and all.
func TestPortHeldAcrossCrash(t *testing.T) {
	privtest.Require(t)
	privtest.RequireCommand(t, "ss", "iproute2")
	a, b := pair(t)
	pseudowire(t, a, b)
	flood := exec.Command("ip", "netns", "exec", b.Name, "ping", "-q", "-i", "0.01", "-w", "30", "203.0.113.1")
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flood.Process.Kill(); flood.Wait() })
	if keeperPID(t, a) == 0 {
		t.Fatal("no keeper runs")
	}
	pid := daemonPID(t, a)
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(pid)
	if got := squatUDP(t, a); len(got) != 1 || !strings.Contains(got[0], "address already in use") {
		t.Fatalf("nobody after kill -9: %q", got)
	}
	if out := must(t, a, "show", "tunnel"); !strings.Contains(out, "Tunnel 1,") {
		t.Fatalf("after restart:\n%s", out)
	}
	if n := pings(a, "203.0.113.2", 5); n != 5 {
		t.Fatalf("after restart %d of 5 pings answered", n)
	}
	// Control: without the keeper the port is free at a crash.
	k := keeperPID(t, a)
	pid = daemonPID(t, a)
	syscall.Kill(k, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(k)
	waitGone(pid)
	got := squatUDP(t, a)
	if len(got) != 2 || got[0] != "ok" || got[1] == "received 0" {
		t.Fatalf("control, nobody with no keeper: %q", got)
	}
}

// TestKeeperNotSquatted: nobody, before root's first command, listens
// where a keeper would (the abstract name keepers had, and the keeper's
// socket file, which it cannot create: the runtime directory is root's).
// The daemon that command starts has its keeper all the same, and a kill
// -9 then leaves the tunnel's port held. (Before keepers' sockets moved
// there, the squatter left the daemon without one.)
func TestKeeperNotSquatted(t *testing.T) {
	privtest.Require(t)
	a, b := pair(t)
	p, err := daemon.PathsAt(a.Path())
	if err != nil {
		t.Fatal(err)
	}
	sq := asNobody(a, attacker(t), "listen", "@l2tpu-keeper", p.Keeper)
	out, _ := sq.StdoutPipe()
	if err := sq.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Process.Kill(); sq.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if !strings.HasPrefix(line, "ok;") || !strings.Contains(line, p.Keeper+": permission denied") {
		t.Fatalf("squatter: %q", line)
	}
	pseudowire(t, a, b)
	if keeperPID(t, a) == 0 {
		log, _ := os.ReadFile(p.Log)
		t.Fatalf("no keeper beside the squatter:\n%s", log)
	}
	pid := daemonPID(t, a)
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(pid)
	if got := squatUDP(t, a); len(got) != 1 || !strings.Contains(got[0], "address already in use") {
		t.Fatalf("nobody after kill -9: %q", got)
	}
}

// TestControlSocketHeldAcrossCrash: after kill -9 the keeper holds the
// control socket, still listening, so nobody can take @l2tpu before the
// next daemon; the next command starts one, which adopts it (and says so)
// and answers. Commands that judged the dead daemon get no answer rather
// than a late one: the keeper closes what waited on the socket.
func TestControlSocketHeldAcrossCrash(t *testing.T) {
	privtest.Require(t)
	a, b := pair(t)
	pseudowire(t, a, b)
	pid := daemonPID(t, a)
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(pid)
	if out, _ := asNobody(a, attacker(t), "bind").CombinedOutput(); !strings.Contains(string(out), "address already in use") {
		t.Fatalf("nobody binding @l2tpu after kill -9: %q", out)
	}
	if out := must(t, a, "show", "tunnel"); !strings.Contains(out, "Tunnel 1,") {
		t.Fatalf("after kill -9:\n%s", out)
	}
	p, err := daemon.PathsAt(a.Path())
	if err != nil {
		t.Fatal(err)
	}
	if log, _ := os.ReadFile(p.Log); !strings.Contains(string(log), "control socket adopted from the keeper") {
		t.Fatalf("the next daemon did not adopt the socket:\n%s", log)
	}
	if n := pings(a, "203.0.113.2", 3); n != 3 {
		t.Fatalf("%d of 3 pings answered after the restart", n)
	}
}

// TestControlQueueNotFilled: a daemon stops keeping its state (SIGTERM to
// one a command started), the keeper holding its control socket; nobody
// connects and closes, 5,000 times, which would fill the queue of a
// listener no one accepts on, so that no daemon could start. The keeper
// accepts and closes them while no daemon serves: root's next command
// starts one, which restores the tunnel.
func TestControlQueueNotFilled(t *testing.T) {
	privtest.Require(t)
	ns := cliNS(t)
	must(t, ns, "add", "tunnel", "tid", "1", "ptid", "2", "encap", "ip", "local", "192.0.2.1", "remote", "198.51.100.1")
	pid := daemonPID(t, ns)
	syscall.Kill(pid, syscall.SIGTERM)
	waitGone(pid)
	out, err := asNobody(ns, attacker(t), "fill", "5000").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "connected ") {
		t.Fatalf("attacker: %v %s", err, out)
	}
	t.Logf("nobody %s", strings.TrimSpace(string(out)))
	if out := must(t, ns, "show", "tunnel"); !strings.Contains(out, "Tunnel 1,") {
		t.Fatalf("after the flood of connections:\n%s", out)
	}
}

// TestCustomStateAfterCrash: a daemon that keeps its journal elsewhere
// (-state, as a service may) dies; the next show, which starts no daemon
// where none ran, brings it back with its options (the journal found
// through them) and shows its tunnel, as it does for the journal in the
// runtime directory. Before, it answered as if nothing existed.
func TestCustomStateAfterCrash(t *testing.T) {
	privtest.Require(t)
	ns := cliNS(t)
	state := filepath.Join(t.TempDir(), "custom.state")
	d := daemonByHand(t, ns, "-state", state)
	must(t, ns, "add", "tunnel", "tid", "1", "ptid", "2", "encap", "ip", "local", "192.0.2.1", "remote", "198.51.100.1")
	d.Process.Kill()
	d.Wait()
	if out := must(t, ns, "show", "tunnel"); !strings.Contains(out, "Tunnel 1,") {
		t.Fatalf("show after kill -9 of a daemon with -state:\n%q", out)
	}
}

// lossDuring runs ping -i 0.002 through the pseudowire from a while do
// runs, and returns how many of its echoes went unanswered.
func lossDuring(t *testing.T, a *privtest.NS, do func()) int {
	t.Helper()
	ping := exec.Command("ip", "netns", "exec", a.Name, "ping", "-n", "-q", "-i", "0.002", "-c", "1000", "-W", "2", "203.0.113.2")
	out, _ := ping.StdoutPipe()
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	do()
	sent, recv := -1, -1
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		fmt.Sscanf(sc.Text(), "%d packets transmitted, %d received", &sent, &recv)
	}
	ping.Wait()
	if sent != 1000 {
		t.Fatalf("ping sent %d", sent)
	}
	return sent - recv
}

// TestUpgradeLosesNothing: `l2tpu daemon restart` (an upgrade: the daemon
// executes itself again, same PID) at either end, under ping -i 0.002,
// loses no frame: the keeper holds the sockets and queues, and what
// arrives meanwhile waits in them. A kill -9 and the restart a command
// makes cost what they cost (logged). The control: the same measurement
// sees a link taken down for 200 ms.
func TestUpgradeLosesNothing(t *testing.T) {
	privtest.Require(t)
	a, b := pair(t)
	pseudowire(t, a, b)
	for _, ns := range []*privtest.NS{a, b} {
		pid := daemonPID(t, ns)
		// Nobody tries to take the control socket's name all along:
		// the restart hands the socket over, listening, so the name is
		// never free.
		sq := asNobody(ns, attacker(t), "bindloop", "3")
		sqr := startReady(t, "squatter", sq)
		lost := lossDuring(t, a, func() {
			if _, e, c := l2tpu(t, ns, "daemon", "restart"); c != 0 {
				t.Fatalf("daemon restart: %d %s", c, e)
			}
		})
		if l, _ := sqr.ReadString('\n'); l != "lost\n" {
			t.Errorf("a user binding @l2tpu during the restart: %q", l)
		}
		sq.Wait()
		if lost != 0 {
			t.Errorf("daemon restart in %s: %d of 1000 lost", ns.Name, lost)
		}
		if got := daemonPID(t, ns); got != pid {
			t.Errorf("daemon restart: pid %d, then %d", pid, got)
		}
		lost = lossDuring(t, a, func() {
			pid := daemonPID(t, ns)
			syscall.Kill(pid, syscall.SIGKILL)
			waitGone(pid)
			must(t, ns, "show", "tunnel")
		})
		t.Logf("kill -9 in %s and the restart a command makes: %d of 1000 lost", ns.Name, lost)
	}
	if out := must(t, a, "show", "session"); !strings.Contains(out, "cookie 0011223344556677") {
		t.Fatalf("after the restarts:\n%s", out)
	}
	lost := lossDuring(t, a, func() {
		b.Run(t, "ip", "link", "set", "pw1", "down")
		time.Sleep(200 * time.Millisecond)
		b.Run(t, "ip", "link", "set", "pw1", "up")
	})
	if lost == 0 {
		t.Fatal("control: a link down for 200 ms lost nothing")
	}
}

// TestOptionsSurviveCrash: a daemon run with -group (as by its service)
// dies; the next root command starts one, which runs with the options the
// first recorded (and says so), so the group's members keep their access.
// Then the service manager's own restart (NOTIFY_SOCKET set) takes that
// daemon's place instead of exiting because one runs. The control: a
// member is refused by a daemon without -group.
func TestOptionsSurviveCrash(t *testing.T) {
	privtest.Require(t)
	ns := cliNS(t)
	bin := binary(t)
	member := func() result {
		return runCmd(t, nil, "ip", "netns", "exec", ns.Name, "setpriv", "--reuid", "nobody", "--regid", "nogroup",
			"--groups", "users", "--", bin, "show", "tunnel")
	}
	serve := func(env ...string) *exec.Cmd {
		d := exec.Command("ip", "netns", "exec", ns.Name, bin, "daemon", "-group", "users")
		d.Env = append(d.Environ(), env...)
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Process.Signal(syscall.SIGTERM); d.Wait() })
		return d
	}
	// Control: a daemon started on demand (no record yet) refuses members.
	must(t, ns, "add", "tunnel", "tid", "1", "ptid", "2", "encap", "ip", "local", "192.0.2.1", "remote", "198.51.100.1")
	if r := member(); r.code != 1 {
		t.Fatalf("a member, no -group: %+v", r)
	}
	stopDaemon(t, ns)
	serve()
	privtest.Eventually(t, 10*time.Second, func() error {
		if r := member(); r.code != 0 {
			return fmt.Errorf("a member with -group: %+v", r)
		}
		return nil
	})
	must(t, ns, "add", "tunnel", "tid", "1", "ptid", "2", "encap", "ip", "local", "192.0.2.1", "remote", "198.51.100.1")
	pid := daemonPID(t, ns)
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(pid)
	if out := must(t, ns, "show", "tunnel"); !strings.Contains(out, "Tunnel 1,") {
		t.Fatalf("after kill -9 and a root command:\n%s", out)
	}
	if r := member(); r.code != 0 || !strings.Contains(r.out, "Tunnel 1,") {
		t.Fatalf("a member after kill -9 and a root command: %+v", r)
	}
	p, err := daemon.PathsAt(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	started := daemonPID(t, ns)
	if log, _ := os.ReadFile(p.Log); !regexp.MustCompile(`msg=options args="\[-group users -keep\]" from="the record`).Match(log) {
		t.Fatalf("the daemon started on demand does not say it runs with the recorded options:\n%s", log)
	}
	// The service's restart takes its place.
	serve("NOTIFY_SOCKET=@l2tpu-test-no-such-socket")
	privtest.Eventually(t, 10*time.Second, func() error {
		if got, err := daemon.RecordedPID(p.PID); err != nil || got == started {
			return fmt.Errorf("the daemon started on demand (%d) still serves, or none yet (%v)", started, err)
		}
		return nil
	})
	waitGone(started)
	if r := member(); r.code != 0 || !strings.Contains(r.out, "Tunnel 1,") {
		t.Fatalf("a member after the service took over: %+v", r)
	}
}

// TestForgedICMPFlood: 200 forged ICMP port unreachables quoting the
// tunnel's 4-tuple, sent from the peer's side during ping -i 0.01 -c 400
// through the pseudowire, cost no frame and no tx_error: each error a send
// consumes is counted and the send made again, as the kernel's tunnels
// ignore them. The control: the daemon counted the errors (they reached
// the socket, where a send that believed them would have failed).
func TestForgedICMPFlood(t *testing.T) {
	privtest.Require(t)
	a, b := pair(t)
	pseudowire(t, a, b)
	forger := exec.Command("ip", "netns", "exec", b.Name, attacker(t), "unreach", "192.0.2.1:5000", "192.0.2.2:6000", "200")
	ping := exec.Command("ip", "netns", "exec", a.Name, "ping", "-n", "-q", "-i", "0.01", "-c", "400", "-W", "2", "203.0.113.2")
	var pingOut strings.Builder
	ping.Stdout = &pingOut
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if out, err := forger.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("forger: %v %s", err, out)
	}
	ping.Wait()
	if !strings.Contains(pingOut.String(), "400 packets transmitted, 400 received") {
		t.Errorf("forged ICMP during the ping: %s", pingOut.String())
	}
	if out := must(t, a, "-s", "show", "session"); !strings.Contains(out, "tx_packets") || !strings.Contains(out, " tx_errors 0\n") {
		t.Errorf("tx_errors moved:\n%s", out)
	}
	var r daemon.Response
	if err := netns.Do(a.Path(), func() (err error) { r, err = daemon.Call(daemon.Request{Op: daemon.OpList}); return err }); err != nil {
		t.Fatal(err)
	}
	if len(r.Tunnels) != 1 || r.Tunnels[0].ICMPErrors == 0 {
		t.Fatalf("control: no ICMP error counted: %+v", r.Tunnels)
	}
	t.Logf("%d ICMP errors counted", r.Tunnels[0].ICMPErrors)
}

// switches is how often the process's threads have been switched out: how
// often it woke.
func switches(t *testing.T, pid int) int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, task := range tasks {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			continue // gone meanwhile
		}
		for _, l := range strings.Split(string(st), "\n") {
			var k int
			if _, err := fmt.Sscanf(l, "voluntary_ctxt_switches: %d", &k); err == nil {
				n += k
			}
			if _, err := fmt.Sscanf(l, "nonvoluntary_ctxt_switches: %d", &k); err == nil {
				n += k
			}
		}
	}
	return n
}

// blockingFDs are the daemon's TAP queues and sockets whose description is
// not O_NONBLOCK (the data path never blocks).
func blockingFDs(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for _, fd := range fds {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if l != "/dev/net/tun" && !strings.HasPrefix(l, "socket:") {
			continue
		}
		info, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
		var flags int
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				fmt.Sscanf(strings.TrimSpace(v), "%o", &flags)
			}
		}
		if flags&syscall.O_NONBLOCK == 0 {
			bad = append(bad, fd.Name()+" "+l)
		}
	}
	return bad
}

// TestKeeperSleepsThroughTraffic: the keeper holds every queue and socket
// of the pseudowire without waking for the frames that pass through them
// (a descriptor in its poller would wake it for each), and handing them to
// it leaves the daemon's descriptions non-blocking (os.File.Fd makes them
// blocking). The control: the daemon, which carries the frames, wakes.
func TestKeeperSleepsThroughTraffic(t *testing.T) {
	privtest.Require(t)
	a, b := pair(t)
	pseudowire(t, a, b)
	k, d := keeperPID(t, a), daemonPID(t, a)
	if k == 0 {
		t.Fatal("no keeper runs")
	}
	if bad := blockingFDs(t, d); len(bad) > 0 {
		t.Errorf("the daemon's descriptions made blocking: %q", bad)
	}
	k0, d0 := switches(t, k), switches(t, d)
	if out, err := a.Try("ping", "-n", "-q", "-f", "-c", "3000", "-s", "1000", "203.0.113.2"); err != nil {
		t.Fatalf("ping: %v %s", err, out)
	}
	kw, dw := switches(t, k)-k0, switches(t, d)-d0
	t.Logf("3000 pings: keeper woke %d times, daemon %d", kw, dw)
	if dw < 1000 {
		t.Fatalf("control: the daemon woke %d times for 3000 pings", dw)
	}
	if kw > 50 {
		t.Errorf("the keeper woke %d times for 3000 pings through what it holds", kw)
	}
}
