package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotRunning: no daemon serves this network namespace.
var ErrNotRunning = errors.New("no l2tpu daemon runs in this network namespace")

// ErrImpostor: the control socket is held by a process that does not run
// as root; the client sends it nothing.
var ErrImpostor = errors.New("the control socket @l2tpu of this network namespace is not held by root")

// MaxResponse bounds a reply the client reads (show with 10,000 sessions
// is a few MiB).
const MaxResponse = 64 << 20

// callTimeout bounds a whole call: deleting a tunnel with thousands of
// sessions takes seconds, not minutes.
const callTimeout = 5 * time.Minute

// Call sends one request to this namespace's daemon, after checking that
// the daemon runs as root (SO_PEERCRED of the listening socket): anyone
// can bind an abstract name, and a request may carry cookies.
func Call(req Request) (Response, error) {
	r, _, err := call(req)
	return r, err
}

// call is Call, also returning the daemon's PID (SO_PEERCRED).
func call(req Request) (_ Response, pid int, _ error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: SocketName, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return Response{}, 0, ErrNotRunning
		}
		return Response{}, 0, err
	}
	defer c.Close()
	cred, err := peerCred(c)
	if err != nil {
		return Response{}, 0, fmt.Errorf("%w: cannot identify it (%v); nothing was sent", ErrImpostor, err)
	}
	if cred.Uid != 0 {
		return Response{}, 0, fmt.Errorf("%w: pid %d (%s) of uid %d holds it; nothing was sent. Stop that process and retry",
			ErrImpostor, cred.Pid, procComm(cred.Pid), cred.Uid)
	}
	pid = int(cred.Pid)
	c.SetDeadline(time.Now().Add(callTimeout))
	werr := json.NewEncoder(c).Encode(req)
	// A daemon that refuses the caller answers without reading the
	// request: the answer is there even when the write failed.
	var r Response
	if err := json.NewDecoder(io.LimitReader(c, MaxResponse)).Decode(&r); err != nil {
		if werr != nil {
			return Response{}, pid, fmt.Errorf("daemon: %w", werr)
		}
		return Response{}, pid, fmt.Errorf("daemon: no answer: %w", err)
	}
	return r, pid, nil
}

// Start runs `exe daemon` detached (its own session, no terminal, cwd /,
// a minimal environment, only fds 0-2: /dev/null and the log), logging to
// logPath, and waits until it answers.
func Start(exe, logPath string, args ...string) error {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	// Descriptors the caller inherited without close-on-exec would leak
	// into the daemon: mark them all.
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		markCloexec()
	}
	if abs, err := filepath.Abs(exe); err == nil {
		exe = abs // it runs in /
	}
	cmd := exec.Command(exe, append([]string{"daemon"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if x, ok := os.LookupEnv("XDG_RUNTIME_DIR"); ok {
		cmd.Env = append(cmd.Env, "XDG_RUNTIME_DIR="+x) // where its runtime files are (RuntimeDir)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_, err := Call(Request{Op: OpList})
		if err == nil || errors.Is(err, ErrImpostor) {
			cmd.Process.Release()
			return err
		}
		select {
		case err := <-exited:
			// Lost a race with another starter? Then a daemon answers.
			if _, cerr := Call(Request{Op: OpList}); cerr == nil || errors.Is(cerr, ErrImpostor) {
				return cerr
			}
			return fmt.Errorf("daemon exited (%v); see %s", err, logPath)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("daemon did not answer within 10s; see %s", logPath)
}

// markCloexec is CloseRange's fallback for kernels before 5.11.
func markCloexec() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err == nil && fd > 2 {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}
