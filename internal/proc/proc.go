// Package proc ends processes a tool or test started, by their own handle.
package proc

import (
	"os/exec"
	"syscall"
	"time"
)

// Stop sends SIGTERM to a started command, waits up to grace for it to
// exit, then kills it, and reaps it either way.
func Stop(cmd *exec.Cmd, grace time.Duration) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}
