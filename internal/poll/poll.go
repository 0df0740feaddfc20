// Package poll waits for a non-blocking fd served by the Go runtime's
// poller to become readable, without reading: a caller can then take
// buffers only when there is something to read into them.
package poll

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// WaitRead returns when the fd behind rc is readable, or an error once it
// is closed.
func WaitRead(rc syscall.RawConn) error {
	first := true
	return rc.Read(func(fd uintptr) bool {
		if !first {
			return true
		}
		first = false
		// The poller is edge-triggered: data left unread by a full batch
		// raises no new edge, so look before parking.
		pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd[:], 0)
		return err == nil && n > 0
	})
}
