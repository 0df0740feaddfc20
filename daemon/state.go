package daemon

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/internal/netns"
	"github.com/l2tpu/l2tpu/internal/peer"
)

// RunDir holds runtime state: cleared at boot (tmpfs), like the kernel's.
const RunDir = "/run/l2tpu"

// ErrStopTimeout: the daemon did not stop within a minute.
var ErrStopTimeout = errors.New("the daemon did not stop within a minute")

// Stop ends the daemon serving the network namespace mounted at nsPath ("":
// the caller's) and waits for it: asked over its socket (OpStop) it deletes
// its tunnels and sessions and its journal; where it does not answer it gets
// SIGTERM, which does the same unless it runs with -keep. The daemon is
// judged and signalled through a pidfd: the one the kernel took when it
// listened, or else the one its PID file names, if that PID is still the
// process that wrote it (the PID file records its start time too: a daemon
// killed with -9 leaves a PID that another process may have now). After a
// clean stop (no journal left) its log goes too. It returns the daemon's
// runtime files.
func Stop(nsPath string) (Paths, error) {
	p, err := PathsAt(nsPath)
	if err != nil {
		return p, err
	}
	recorded := recordedDaemon(p.PID)
	// Ask it (a daemon started on demand keeps its state on SIGTERM);
	// signal it where it does not answer. One whose runtime files are
	// elsewhere (another container's /run) answers too.
	var resp Response
	var d *peer.Process
	cerr := netns.Do(nsPath, func() (err error) { resp, d, err = call(Request{Op: OpStop}); return err })
	if cerr == nil && resp.Errno != 0 {
		d.Close()
		if recorded != nil {
			recorded.Close()
		}
		return p, fmt.Errorf("%s: %w", resp.Error, syscall.Errno(resp.Errno))
	}
	ours := recorded != nil // its runtime files are p's
	switch {
	case d == nil:
		d = recorded
	case recorded != nil:
		recorded.Close()
	}
	if d == nil {
		// None runs (it died): a keeper may still hold its sockets.
		netns.Do(nsPath, func() error { return quitKeeper(p.Keeper) })
		return p, nil
	}
	defer d.Close()
	if cerr != nil {
		if err := d.Signal(syscall.SIGTERM); err != nil {
			return p, nil
		}
	}
	if d.PID() == 0 {
		// Its PID is not to be seen (another PID namespace's): wait
		// until its socket is gone.
		return p, waitGone(nsPath)
	}
	if !d.Wait(time.Minute) {
		return p, fmt.Errorf("pid %d: %w", d.PID(), ErrStopTimeout)
	}
	if _, err := os.Stat(p.State); ours && errors.Is(err, os.ErrNotExist) {
		os.Remove(p.Log) // a clean stop: nothing of it is left
	}
	return p, nil
}

// Restart makes this namespace's daemon execute itself again (OpRestart),
// as an upgrade does, and waits until it answers again: its sockets and
// queues stay with the keeper meanwhile, so the frames that arrive wait in
// them. Where no daemon runs there is nothing to restart.
func Restart() error {
	resp, d, err := call(Request{Op: OpRestart})
	if err != nil {
		return err
	}
	defer d.Close()
	if resp.Errno != 0 {
		return fmt.Errorf("%s: %w", resp.Error, syscall.Errno(resp.Errno))
	}
	for i := 0; i < 3000; i++ {
		if d.Wait(0) {
			return errors.New("the daemon exited instead of restarting; see its log")
		}
		if _, err := Call(Request{Op: OpList}); err == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("the daemon did not answer within 30s after restarting: %w", ErrStopTimeout)
}

// pidRecord is what a PID file holds: the daemon's PID and start time.
func pidRecord() []byte {
	st, _ := os.ReadFile("/proc/self/stat")
	start, _ := peer.StartOf(st)
	return fmt.Appendf(nil, "%d %d\n", os.Getpid(), start)
}

// writePIDFile writes this process's pidRecord to path, aside and renamed
// over: on a full filesystem the write fails and the file is left as it
// was, never cut empty.
func writePIDFile(path string) error {
	tmp := path + ".tmp"
	err := os.WriteFile(tmp, pidRecord(), 0o644)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// recordedDaemon is the daemon a PID file names, if it still runs; a stale
// file is removed.
func recordedDaemon(path string) *peer.Process {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscan(string(b), &pid, &start); err == nil && pid > 0 {
		if d, err := peer.Open(pid, start); err == nil {
			return d
		}
	}
	os.Remove(path) // stale, or from a version that recorded no start time
	return nil
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

// RecordedPID is the PID a daemon's PID file names (the daemon may have
// gone since): for tools and tests that signal it.
func RecordedPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return pid, nil
}
