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

	"github.com/l2tpu/l2tpu/internal/peer"
)

// ErrNotRunning: no daemon serves this network namespace.
var ErrNotRunning = errors.New("no l2tpu daemon runs in this network namespace")

// ErrImpostor: the control socket is held by a process that is not root
// with CAP_NET_ADMIN over this network namespace, as a daemon is; the
// client sends it nothing.
var ErrImpostor = errors.New("the control socket @l2tpu of this network namespace is not held by root with CAP_NET_ADMIN")

// MaxResponse bounds a reply the client reads (show with 10,000 sessions
// is a few MiB).
const MaxResponse = 64 << 20

// callTimeout bounds a whole call: deleting a tunnel with thousands of
// sessions takes seconds, not minutes.
const callTimeout = 5 * time.Minute

// Call sends one request to this namespace's daemon, after checking that
// the process listening is root with CAP_NET_ADMIN over the namespace
// (judged through the pidfd the kernel took when it listened): anyone can
// bind an abstract name, and a request may carry cookies.
func Call(req Request) (Response, error) {
	r, p, err := call(req)
	if p != nil {
		p.Close()
	}
	return r, err
}

// call is Call, also returning the daemon (for Stop to wait on; the
// caller closes it).
func call(req Request) (_ Response, daemon *peer.Process, _ error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: SocketName, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return Response{}, nil, ErrNotRunning
		}
		return Response{}, nil, err
	}
	defer c.Close()
	p, err := peer.Of(c)
	if errors.Is(err, peer.ErrGone) {
		// The process that listens has exited, its socket held on: a
		// daemon that died, whose keeper holds it for the next (which
		// adopts it and listens again), or whatever a squatter left
		// (which no daemon adopts). Nothing is sent either way.
		return Response{}, nil, ErrNotRunning
	}
	if err != nil {
		return Response{}, nil, fmt.Errorf("%w: cannot identify it (%v); nothing was sent", ErrImpostor, err)
	}
	ok, why, err := p.NetAdmin()
	if errors.Is(err, peer.ErrGone) {
		p.Close()
		return Response{}, nil, ErrNotRunning // as above: it has exited since it listened
	}
	if !ok {
		defer p.Close()
		// A refusal is believed only from a listener the caller could
		// not judge, and only its errno: its text is the listener's,
		// which may be anyone's.
		if err != nil || why == peer.OtherUserNS {
			if r, ok := refusal(c); ok {
				return Response{Errno: r.Errno}, nil, nil
			}
		}
		if err != nil {
			why = "cannot judge it: " + err.Error()
		}
		return Response{}, nil, fmt.Errorf("%w: pid %d (%s) of uid %d holds it, and %s; nothing was sent. Stop that process and retry",
			ErrImpostor, p.PID(), p.Comm(), p.UID, why)
	}
	if p.UID != 0 {
		defer p.Close()
		return Response{}, nil, fmt.Errorf("%w: pid %d (%s) of uid %d holds it; nothing was sent. Stop that process and retry",
			ErrImpostor, p.PID(), p.Comm(), p.UID)
	}
	daemon = p
	defer func() {
		if daemon == nil {
			p.Close()
		}
	}()
	c.SetDeadline(time.Now().Add(callTimeout))
	werr := json.NewEncoder(c).Encode(req)
	// A daemon that refuses the caller answers without reading the
	// request: the answer is there even when the write failed.
	var r Response
	if err := json.NewDecoder(io.LimitReader(c, MaxResponse)).Decode(&r); err != nil {
		if werr != nil {
			return Response{}, daemon, fmt.Errorf("daemon: %w", werr)
		}
		return Response{}, daemon, fmt.Errorf("daemon: no answer: %w", err)
	}
	return r, daemon, nil
}

// refusal is the answer a daemon sends at once, unasked, to a caller it
// refuses (admit): where the caller cannot judge the daemon (a caller that
// is root only of a user namespace of its own cannot see into the daemon's),
// the refusal is still worth believing, as it reveals and costs nothing.
func refusal(c *net.UnixConn) (Response, bool) {
	c.SetReadDeadline(time.Now().Add(time.Second))
	var r Response
	if err := json.NewDecoder(io.LimitReader(c, MaxRequest)).Decode(&r); err != nil || r.Errno != int(syscall.EPERM) {
		return Response{}, false
	}
	return r, true
}

// Start runs `exe daemon` detached (its own session, no terminal, cwd /,
// a minimal environment, only fds 0-2: /dev/null and the log), logging to
// logPath, and waits until it answers.
func Start(exe, logPath string, args ...string) error { return start(exe, logPath, nil, args) }

func start(exe, logPath string, env []string, args []string) error {
	os.MkdirAll(filepath.Dir(logPath), 0o700) // where it fails, so does the open below
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		// A full filesystem must not keep the daemon from starting (and
		// restoring): it then logs nowhere.
		fmt.Fprintf(os.Stderr, "l2tpu: the daemon's log %s: %v; it starts without one\n", logPath, err)
		if logf, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0); err != nil {
			return err
		}
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
	cmd.Env = append(cmd.Env, env...)
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
