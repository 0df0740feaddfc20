package tap

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// LinkEvent is a change of an interface, from rtnetlink.
type LinkEvent struct {
	Index   int
	Name    string
	MTU     int
	Up      bool
	Deleted bool
}

// Monitor reports interface changes in the namespace it was created in: the
// data path needs each TAP's current MTU and up state, as l2tp_eth reads
// dev->mtu and IFF_UP per packet, without an ioctl per packet.
type Monitor struct {
	f      *os.File
	rc     syscall.RawConn
	closed atomic.Bool // Close was called: Run's read error is the end
}

// NewMonitor subscribes to link changes (RTMGRP_LINK).
func NewMonitor() (*Monitor, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("link monitor: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("link monitor: %w", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	f := os.NewFile(uintptr(fd), "rtnetlink")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Monitor{f: f, rc: rc}, nil
}

// Run calls fn for every link event until Close, and then returns nil. On
// a receive-buffer overrun (ENOBUFS) it calls resync so the caller can
// re-read what it tracks.
func (m *Monitor) Run(fn func(LinkEvent), resync func()) error {
	buf := make([]byte, 32<<10)
	for {
		var n int
		var rerr error
		err := m.rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			if m.closed.Load() {
				return nil // the poller's "use of closed file" is not os.ErrClosed
			}
			return err
		}
		if rerr == unix.ENOBUFS {
			resync()
			continue
		}
		if rerr != nil {
			return rerr
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		for _, msg := range msgs {
			if ev, ok := parseLink(msg); ok {
				fn(ev)
			}
		}
	}
}

func parseLink(msg syscall.NetlinkMessage) (LinkEvent, bool) {
	var ev LinkEvent
	if msg.Header.Type != unix.RTM_NEWLINK && msg.Header.Type != unix.RTM_DELLINK {
		return ev, false
	}
	if len(msg.Data) < unix.SizeofIfInfomsg {
		return ev, false
	}
	ifi := (*unix.IfInfomsg)(unsafe.Pointer(&msg.Data[0]))
	ev.Index = int(ifi.Index)
	ev.Up = ifi.Flags&unix.IFF_UP != 0
	ev.Deleted = msg.Header.Type == unix.RTM_DELLINK
	attrs, err := syscall.ParseNetlinkRouteAttr(&msg)
	if err != nil {
		return ev, false
	}
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.IFLA_IFNAME:
			ev.Name = unix.ByteSliceToString(a.Value)
		case unix.IFLA_MTU:
			if len(a.Value) >= 4 {
				ev.MTU = int(binary.NativeEndian.Uint32(a.Value))
			}
		}
	}
	return ev, true
}

// Close stops Run.
func (m *Monitor) Close() error {
	m.closed.Store(true)
	return m.f.Close()
}
