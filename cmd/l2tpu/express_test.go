package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/internal/privtest"
)

// fifoThreads counts the threads of process pid whose policy is SCHED_FIFO
// (/proc/PID/task/TID/sched).
func fifoThreads(t *testing.T, pid int) int {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/sched", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	n := 0
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "policy" && f[2] == "1" {
				n++
			}
		}
	}
	return n
}

// TestExpressThread: the daemon serves light sessions in one thread of
// realtime priority (SCHED_FIFO) while it carries traffic, and in none
// with -rt-priority 0 or without CAP_SYS_NICE, where it says so and works
// all the same.
func TestExpressThread(t *testing.T) {
	privtest.Require(t)
	privtest.RequireCommand(t, "setpriv", "util-linux")
	bin := binary(t)
	for _, c := range []struct {
		name   string
		prefix []string // before the binary
		flags  []string
		fifo   int
		warn   bool
	}{
		{"default", nil, nil, 1, false},
		{"-rt-priority 0", nil, []string{"-rt-priority", "0"}, 0, false},
		{"no CAP_SYS_NICE", []string{"setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--"}, nil, 0, true},
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
			if n := pings(a, "203.0.113.2", 10); n < 8 {
				t.Fatalf("%d of 10 pings answered", n)
			}
			// The priority follows the express loop from thread to
			// thread, none having it for an instant in between: look
			// a few times.
			pid, n := daemonPID(t, a), 0
			for i := 0; i < 20; i++ {
				if n = fifoThreads(t, pid); n > 1 {
					t.Fatalf("%d threads of SCHED_FIFO", n)
				} else if n == c.fifo {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if n != c.fifo {
				t.Errorf("%d threads of SCHED_FIFO, want %d", n, c.fifo)
			}
			logged, _ := os.ReadFile(logf)
			if warned := strings.Contains(string(logged), "no realtime priority"); warned != c.warn {
				t.Errorf("warned %v, want %v:\n%s", warned, c.warn, logged)
			}
		})
	}
}
