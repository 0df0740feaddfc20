package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// ErrNotRunning: no daemon serves this network namespace.
var ErrNotRunning = errors.New("no l2tpu daemon runs in this network namespace")

// Call sends one request to this namespace's daemon.
func Call(req Request) (Response, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: SocketName, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return Response{}, ErrNotRunning
		}
		return Response{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return Response{}, fmt.Errorf("daemon: %w", err)
	}
	var r Response
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		return Response{}, fmt.Errorf("daemon: no answer: %w", err)
	}
	return r, nil
}

// Start runs `exe daemon` detached (its own session, no terminal), logging
// to logPath, and waits until it answers.
func Start(exe, logPath string, args ...string) error {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, append([]string{"daemon"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := Call(Request{Op: OpList}); err == nil {
			cmd.Process.Release()
			return nil
		}
		select {
		case err := <-exited:
			// Lost a race with another starter? Then a daemon answers.
			if _, cerr := Call(Request{Op: OpList}); cerr == nil {
				return nil
			}
			return fmt.Errorf("daemon exited (%v); see %s", err, logPath)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("daemon did not answer within 10s; see %s", logPath)
}
