// Package poll waits for a non-blocking fd served by the Go runtime's
// poller to become readable, without reading: a caller can then take
// buffers only when there is something to read into them.
package poll

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// WaitRead returns when the fd behind rc is readable, or an error once it
// is closed. drained says the caller's last read emptied the queue; if it
// did not (a full batch), there is more to read and WaitRead returns at
// once.
func WaitRead(rc syscall.RawConn, drained bool) error {
	if !drained {
		return nil
	}
	first := true
	return rc.Read(func(fd uintptr) bool {
		if !first {
			return true
		}
		first = false
		// rc.Read has just reset the poller's readiness flag (pollReset),
		// so an edge that came before this call is forgotten: look at the
		// fd itself before parking.
		pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd[:], 0)
		return err == nil && n > 0
	})
}
