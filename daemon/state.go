package daemon

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/internal/netns"
)

// RunDir holds runtime state: cleared at boot (tmpfs), like the kernel's.
const RunDir = "/run/l2tpu"

// ErrStopTimeout: the daemon did not stop within a minute.
var ErrStopTimeout = errors.New("the daemon did not stop within a minute")

// Stop ends the daemon serving the network namespace mounted at nsPath ("":
// the caller's) and waits for it: asked over its socket (OpStop) it deletes
// its tunnels and sessions and its journal; where it does not answer it gets
// SIGTERM, which does the same unless it runs with -keep. The PID it recorded
// is signalled only if that process is an l2tpu daemon in that namespace (a
// PID file left by a daemon killed with -9 may name another process now).
// After a clean stop (no journal left) its log goes too. It returns the
// daemon's runtime files.
func Stop(nsPath string) (Paths, error) {
	p, err := PathsAt(nsPath)
	if err != nil {
		return p, err
	}
	pid := 0
	if b, err := os.ReadFile(p.PID); err == nil {
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || !isDaemonIn(pid, nsPath) {
			os.Remove(p.PID) // stale
			pid = 0
		}
	}
	// Ask it (a daemon started on demand keeps its state on SIGTERM);
	// signal it where it does not answer. One whose runtime files are
	// elsewhere (another container's /run) answers too: its PID is the
	// socket's peer.
	var resp Response
	var peer int
	cerr := netns.Do(nsPath, func() (err error) { resp, peer, err = call(Request{Op: OpStop}); return err })
	if cerr == nil && resp.Errno != 0 {
		return p, fmt.Errorf("%s: %w", resp.Error, syscall.Errno(resp.Errno))
	}
	ours := pid != 0 // its runtime files are p's
	if pid == 0 && cerr == nil {
		if !isDaemonIn(peer, nsPath) {
			// Stopping, but its PID is not to be seen (another PID
			// namespace's): wait until its socket is gone.
			return p, waitGone(nsPath)
		}
		pid = peer
	}
	if pid == 0 {
		return p, nil // none runs
	}
	if cerr != nil {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			return p, nil
		}
	}
	for i := 0; i < 3000; i++ {
		if syscall.Kill(pid, 0) != nil {
			if _, err := os.Stat(p.State); ours && errors.Is(err, os.ErrNotExist) {
				os.Remove(p.Log) // a clean stop: nothing of it is left
			}
			return p, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p, fmt.Errorf("pid %d: %w", pid, ErrStopTimeout)
}

// waitGone waits until no daemon answers in the namespace at nsPath.
func waitGone(nsPath string) error {
	for i := 0; i < 3000; i++ {
		var err error
		netns.Do(nsPath, func() error { _, err = Call(Request{Op: OpList}); return nil })
		if errors.Is(err, ErrNotRunning) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ErrStopTimeout
}

// isDaemonIn reports whether pid is `l2tpu daemon` (or a binary run as
// such) in the network namespace at nsPath ("": the caller's).
func isDaemonIn(pid int, nsPath string) bool {
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
	if len(args) < 2 || args[1] != "daemon" {
		return false
	}
	var want string
	err = netns.Do(nsPath, func() (err error) {
		want, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	})
	if err != nil {
		return false
	}
	got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	return err == nil && got == want
}

// StopInNamespace is Stop, then removes every runtime file of the
// namespace's daemon (journal, log, PID file): for tools and tests that
// start daemons in namespaces they made and delete afterwards.
func StopInNamespace(nsPath string) error {
	p, err := Stop(nsPath)
	if p.ID != "" {
		p.removeRuntime()
	}
	return err
}
