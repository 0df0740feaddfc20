package conn

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// UDPOptions are the tunnel's checksum settings (ip l2tp udp_csum,
// udp6_csum_tx, udp6_csum_rx), named so the zero value is ip l2tp's default.
type UDPOptions struct {
	Csum4 bool // IPv4: compute the UDP checksum on send (default: send 0)
	// GSO sends runs of equal-size messages with UDP_SEGMENT. The kernel
	// refuses it on a socket that sends checksum 0, so with GSO (where the
	// kernel has it) every message carries a real UDP checksum, whatever
	// Csum4 and ZeroCsum6Tx say: valid for every receiver, but not the
	// kernel's bytes. Without GSO the zero-checksum settings hold exactly.
	GSO bool
	// GRO lets the kernel coalesce received datagrams (UDP_GRO); ReadBatch
	// splits them again.
	GRO         bool
	ZeroCsum6Tx bool // IPv6: send checksum 0 (udp6_csum_tx off)
	ZeroCsum6Rx bool // IPv6: accept checksum 0 (udp6_csum_rx off)
}

// DialUDP makes a tunnel's UDP socket: bound to local, connected to remote,
// so only datagrams from remote reach it. Errors carry the kernel's errno
// (EADDRINUSE, EADDRNOTAVAIL, ENETUNREACH, ...) for errors.Is.
func DialUDP(local, remote netip.AddrPort, o UDPOptions) (Conn, error) {
	return openUDP(nil, local, remote, o)
}

// AdoptUDP is DialUDP for a socket an earlier process made (kept for its
// successor, see File): it must be the UDP socket bound to local and
// connected to remote, or it is closed and an error returned.
func AdoptUDP(f *os.File, local, remote netip.AddrPort, o UDPOptions) (Conn, error) {
	return openUDP(f, local, remote, o)
}

func openUDP(f *os.File, local, remote netip.AddrPort, o UDPOptions) (Conn, error) {
	v6 := local.Addr().Is6()
	if remote.Addr().Is6() != v6 {
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("conn: local %s and remote %s differ in family: %w", local.Addr(), remote.Addr(), unix.EINVAL)
	}
	gso := false
	set := func(fd int) error {
		bufSize(fd, SocketBuffer)
		if err := noDF(fd, v6); err != nil {
			return err
		}
		gso = o.GSO && segmentSupported(fd)
		if v6 {
			if o.ZeroCsum6Tx && !gso {
				if err := unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_NO_CHECK6_TX, 1); err != nil {
					return err
				}
			}
			if o.ZeroCsum6Rx {
				return unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_NO_CHECK6_RX, 1)
			}
			return nil
		}
		if !o.Csum4 && !gso {
			return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_NO_CHECK, 1)
		}
		return nil
	}
	var c net.Conn
	var err error
	if f == nil {
		c, err = dial(network("udp", local.Addr()), net.UDPAddrFromAddrPort(local), remote.String(), set)
	} else {
		c, err = adopt(f, "udp", netip.AddrPortFrom(local.Addr().Unmap(), local.Port()), remote, set)
	}
	conn, err := wrap(c, v6, err)
	if err == nil && o.GRO {
		s := conn.(*sock)
		s.rc.Control(func(fd uintptr) {
			s.groOn = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
		})
	}
	if err == nil && gso {
		s := conn.(*sock)
		if s.setGSOMax() {
			s.gso.Store(true)
		}
	}
	return conn, err
}

// segmentSupported asks the kernel whether the socket knows UDP_SEGMENT.
func segmentSupported(fd int) bool {
	_, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT)
	return err == nil
}
