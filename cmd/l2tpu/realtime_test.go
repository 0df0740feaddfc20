package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

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
