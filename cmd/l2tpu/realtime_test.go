package main

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/l2tpu/l2tpu/daemon"
	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

// fifoThreads counts the threads of process pid whose policy is SCHED_FIFO
// (/proc/PID/task/TID/sched), and all its threads.
func fifoThreads(t *testing.T, pid int) (fifo, all int) {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/sched", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended
		}
		all++
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "policy" && f[2] == "1" {
				fifo++
			}
		}
	}
	return fifo, all
}

// TestRealtimeThreads: while the CPUs are contended (more programs spinning
// than there are CPUs) the daemon's threads all run at a realtime priority
// (SCHED_FIFO) as they carry traffic, as the kernel moves frames ahead of
// every program, its keeper's none; with -rt-priority 0 or without
// CAP_SYS_NICE none do, and without the capability it says so and works
// all the same. (That they are ordinary where nothing contends is
// dataplane's TestRealtimePriority, against pressure readings of its own:
// here the machine's own are whatever else runs.)
func TestRealtimeThreads(t *testing.T) {
	privtest.Require(t)
	privtest.RequireCommand(t, "setpriv", "util-linux")
	bin := binary(t)
	for _, c := range []struct {
		name   string
		prefix []string // before the binary
		flags  []string
		fifo   bool // every thread; else none
		warn   bool
	}{
		{"default", nil, nil, true, false},
		{"-rt-priority 0", nil, []string{"-rt-priority", "0"}, false, false},
		{"no CAP_SYS_NICE", []string{"setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--"}, nil, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := pair(t)
			logf := filepath.Join(t.TempDir(), "daemon.log")
			lf, err := os.Create(logf)
			if err != nil {
				t.Fatal(err)
			}
			argv := append(append(append([]string{"ip", "netns", "exec", a.Name}, c.prefix...), bin, "daemon"), c.flags...)
			d := exec.Command(argv[0], argv[1:]...)
			d.Stdout, d.Stderr = lf, lf
			if err := d.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Process.Signal(syscall.SIGTERM); d.Wait(); lf.Close() })
			privtest.Eventually(t, 10*time.Second, func() error {
				if _, errs, code := l2tpu(t, a, "show", "tunnel"); code != 0 {
					return fmt.Errorf("daemon not answering: %s", errs)
				}
				return nil
			})
			must(t, a, "add", "tunnel", "session", "tunnel_id", "1", "peer_tunnel_id", "2", "local", "192.0.2.1", "remote", "192.0.2.2",
				"udp_sport", "1701", "udp_dport", "1701", "session_id", "1", "peer_session_id", "2", "name", "pw0")
			must(t, b, "add", "tunnel", "session", "tunnel_id", "2", "peer_tunnel_id", "1", "local", "192.0.2.2", "remote", "192.0.2.1",
				"udp_sport", "1701", "udp_dport", "1701", "session_id", "2", "peer_session_id", "1", "name", "pw0")
			a.Run(t, "ip", "addr", "add", "203.0.113.1/24", "dev", "pw0")
			a.Run(t, "ip", "link", "set", "pw0", "up")
			b.Run(t, "ip", "addr", "add", "203.0.113.2/24", "dev", "pw0")
			b.Run(t, "ip", "link", "set", "pw0", "up")
			for range runtime.NumCPU() + 1 {
				hog := exec.Command("sh", "-c", "while :; do :; done")
				if err := hog.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { hog.Process.Kill(); hog.Wait() })
			}
			time.Sleep(100 * time.Millisecond)
			if recv, _ := a.Try("ping", "-q", "-i", "0.01", "-c", "30", "203.0.113.2"); !strings.Contains(recv, " 0% packet loss") {
				t.Fatalf("pings: %s", recv)
			}
			fifo, all := fifoThreads(t, daemonPID(t, a))
			if want := map[bool]int{true: all, false: 0}[c.fifo]; fifo != want || all < 2 {
				t.Errorf("%d of %d threads SCHED_FIFO, want %d", fifo, all, want)
			}
			if k := keeperPID(t, a); k == 0 {
				t.Error("no keeper")
			} else if fifo, all := fifoThreads(t, k); fifo != 0 {
				t.Errorf("keeper: %d of %d threads SCHED_FIFO", fifo, all)
			}
			logged, _ := os.ReadFile(logf)
			if warned := strings.Contains(string(logged), "no realtime priority"); warned != c.warn {
				t.Errorf("warned %v, want %v:\n%s", warned, c.warn, logged)
			}
		})
	}
}

// echoFlood is an L2TP message to session sid (UDP, default sublayer)
// carrying an ICMP echo request from 203.0.113.2 to 203.0.113.1 at the
// Ethernet address dst: each costs the receiving daemon a write, the
// stack's answer and its send.
func echoFlood(t *testing.T, sid uint32, dst net.HardwareAddr) string {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, DstMAC: dst, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: net.IPv4(203, 0, 113, 2), DstIP: net.IPv4(203, 0, 113, 1)}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, icmp, gopacket.Payload(make([]byte, 1200))); err != nil {
		t.Fatal(err)
	}
	h := encap.NewTxHeader(&encap.Session{Encap: encap.EncapUDP, PeerSessionID: sid, L2Spec: encap.L2SpecDefault})
	return hex.EncodeToString(h.Append(nil, 0, buf.Bytes()))
}

// TestFloodMakesDaemonOrdinary: a flood from the peer's address that the
// daemon cannot keep up with (every message an echo request its stack
// answers) has it use a whole CPU: after a second it runs as an ordinary
// process for a while, as the kernel hands such work to ksoftirqd, and
// says so; realtime again after the hold-off, the flood over and the CPUs
// still contended. The control: contended but not flooded, it is realtime.
func TestFloodMakesDaemonOrdinary(t *testing.T) {
	privtest.Require(t)
	a, b := pair(t)
	must(t, a, "add", "tunnel", "session", "tunnel_id", "1", "peer_tunnel_id", "2", "local", "192.0.2.1", "remote", "192.0.2.2",
		"udp_sport", "5000", "udp_dport", "7000", "session_id", "10", "peer_session_id", "20", "name", "pw0")
	a.Run(t, "ip", "addr", "add", "203.0.113.1/24", "dev", "pw0")
	a.Run(t, "ip", "link", "set", "pw0", "up")
	// The answers go to a neighbour that is always there.
	a.Run(t, "ip", "neigh", "replace", "203.0.113.2", "lladdr", "02:00:00:00:00:09", "dev", "pw0", "nud", "permanent")
	mac, err := net.ParseMAC(strings.TrimSpace(a.Run(t, "cat", "/sys/class/net/pw0/address")))
	if err != nil {
		t.Fatal(err)
	}
	msg := echoFlood(t, 10, mac)
	for range runtime.NumCPU() {
		hog := exec.Command("sh", "-c", "while :; do :; done")
		if err := hog.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { hog.Process.Kill(); hog.Wait() })
	}
	pid := daemonPID(t, a)
	p, err := daemon.PathsAt(a.Path())
	if err != nil {
		t.Fatal(err)
	}
	// Control: contended, a trickle of the same messages, realtime.
	out, _ := exec.Command("ip", "netns", "exec", b.Name, attacker(t), "flood", "192.0.2.2:7000", "192.0.2.1:5000", "0", msg).CombinedOutput()
	if !strings.HasPrefix(string(out), "sent") {
		t.Fatalf("attacker: %s", out)
	}
	privtest.Eventually(t, 10*time.Second, func() error {
		a.Try("ping", "-c", "5", "-i", "0.05", "203.0.113.2") // rounds for the daemon to look at the pressure
		if fifo, all := fifoThreads(t, pid); fifo != all {
			return fmt.Errorf("contended, not flooded: %d of %d threads realtime", fifo, all)
		}
		return nil
	})
	// Two flooders, so that the daemon is the one that cannot keep up,
	// one of them realtime below the daemon, so that whatever else runs
	// on the machine (other tests) cannot slow the flood.
	var floods []*exec.Cmd
	fout := make([]strings.Builder, 2)
	for i := range fout {
		argv := []string{"ip", "netns", "exec", b.Name, attacker(t), "flood", "192.0.2.2:7000", "192.0.2.1:5000", "6", msg}
		if i == 0 {
			argv = append([]string{"chrt", "-f", "5"}, argv...)
		}
		flood := exec.Command(argv[0], argv[1:]...)
		flood.Stdout = &fout[i]
		if err := flood.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { flood.Process.Kill(); flood.Wait() })
		floods = append(floods, flood)
	}
	privtest.Eventually(t, 5*time.Second, func() error {
		if fifo, all := fifoThreads(t, pid); fifo != 0 {
			return fmt.Errorf("flooded: %d of %d threads still realtime", fifo, all)
		}
		return nil
	})
	if log, _ := os.ReadFile(p.Log); !strings.Contains(string(log), "ordinary process for a while") {
		t.Errorf("not logged:\n%s", log)
	}
	for _, f := range floods {
		f.Wait()
	}
	t.Logf("flooders: %s; %s", strings.TrimSpace(fout[0].String()), strings.TrimSpace(fout[1].String()))
	privtest.Eventually(t, 15*time.Second, func() error {
		a.Try("ping", "-c", "5", "-i", "0.05", "203.0.113.2")
		if fifo, all := fifoThreads(t, pid); fifo != all {
			return fmt.Errorf("after the flood: %d of %d threads realtime", fifo, all)
		}
		return nil
	})
}
