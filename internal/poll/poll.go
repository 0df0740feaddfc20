// Package poll waits for a non-blocking fd served by the Go runtime's
// poller to become readable, without reading: a caller can then take
// buffers only when there is something to read into them.
package poll

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Waiter waits on one fd, for one reader at a time. Its callback is bound
// once, so waiting allocates nothing.
type Waiter struct {
	rc    syscall.RawConn
	first bool
	fn    func(uintptr) bool
}

// NewWaiter returns a Waiter for the fd behind rc.
func NewWaiter(rc syscall.RawConn) *Waiter {
	w := &Waiter{rc: rc}
	w.fn = w.check
	return w
}

// Wait returns when the fd is readable, or an error once it is closed.
// drained says the caller's last read emptied the queue; if it did not (a
// full batch), there is more to read and Wait returns at once.
func (w *Waiter) Wait(drained bool) error {
	if !drained {
		return nil
	}
	w.first = true
	return w.rc.Read(w.fn)
}

func (w *Waiter) check(fd uintptr) bool {
	if !w.first {
		return true
	}
	w.first = false
	// rc.Read has just reset the poller's readiness flag (pollReset), so
	// an edge that came before this call is forgotten: look at the fd
	// itself before parking.
	return readable(fd)
}

// readable polls fd once, without blocking.
func readable(fd uintptr) bool {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	var ts unix.Timespec // zero: do not block
	n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd[0])), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	return e == 0 && n > 0
}
