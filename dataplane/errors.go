package dataplane

import (
	"errors"
	"syscall"
)

// Error is a dataplane error that carries the errno the Linux kernel returns
// for the same condition, so a CLI can print what ip l2tp prints
// ("RTNETLINK answers: File exists") and callers can use errors.Is with
// either the sentinel or the errno.
type Error struct {
	msg   string
	errno syscall.Errno
}

func (e *Error) Error() string { return e.msg }

// Unwrap exposes the errno.
func (e *Error) Unwrap() error { return e.errno }

// Errno is the kernel's errno for this error.
func (e *Error) Errno() syscall.Errno { return e.errno }

// Errors of the create and delete operations, with the kernel's errnos.
var (
	ErrTunnelExists  = &Error{"tunnel ID already in use: choose another tunnel_id", syscall.EEXIST}
	ErrNoTunnel      = &Error{"no such tunnel: create it first or check tunnel_id", syscall.ENODEV}
	ErrSessionExists = &Error{"session ID already in use in this tunnel (or, with IP encapsulation, in this namespace): choose another session_id", syscall.EEXIST}
	ErrNoSession     = &Error{"no such session: check tunnel_id and session_id", syscall.ENODEV}
	ErrNameExists    = &Error{"an interface with this name already exists: choose another name", syscall.EEXIST}
	ErrInvalid       = &Error{"invalid parameters", syscall.EINVAL}
	ErrClosed        = &Error{"dataplane is closed", syscall.ESHUTDOWN}
	// ErrNeedRaw: the kernel needs only CAP_NET_ADMIN for an IP-encap
	// tunnel; a userspace dataplane needs a raw socket.
	ErrNeedRaw = &Error{"IP encapsulation needs CAP_NET_RAW (a raw IP socket for protocol 115): give the daemon CAP_NET_RAW, or use encap udp", syscall.EPERM}
	// Restoring a session (RestoreSession):
	ErrInterfaceGone = &Error{"the session's interface was deleted (or its name is another's now): the session goes with it, as the kernel's would", syscall.ENODEV}
	ErrInterfaceBusy = &Error{"the session's interface is held by another process: stop it, or delete the session", syscall.EBUSY}
)

// Errno returns the errno to report for err: the kernel's errno where one
// is known (EINVAL otherwise).
func Errno(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EINVAL
}
