package conn

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/encap"
)

// proto is the ":115" of Go's "ip4:115" network names, from encap.IPProto.
var proto = ":" + strconv.Itoa(encap.IPProto)

func ipv6PacketConn(pc net.PacketConn) batchConn { return ipv6.NewPacketConn(pc) }

// IPOptions are the choices of an IP tunnel's transmit socket.
type IPOptions struct {
	// Proto115 sends through a raw protocol-115 socket, which builds the
	// IP header itself. The kernel then hands that socket a copy of every
	// protocol-115 packet from its remote to its local address (its
	// filter drops them): a cost on every received packet for each
	// tunnel between the same two addresses. Without it (the default)
	// the socket is an IPPROTO_RAW one (IP_HDRINCL), which is handed only
	// protocol-255 packets (dropped by its filter too); WriteBatch writes
	// the header in front of each message.
	Proto115 bool
}

// DialIP makes a tunnel's transmit socket for IP encapsulation: a raw socket
// bound to local and connected to remote, as the kernel's l2tp_ip socket is
// (so local must be ours and remote routable). It queues nothing (a filter
// drops what the kernel hands it), because
// IP-encap reception is namespace-wide ([ListenIP]). Unless o.Proto115, its
// WriteBatch writes the IP header in the HeaderRoom bytes before offset.
func DialIP(local, remote netip.Addr, o IPOptions) (Conn, error) {
	return openIP(nil, local, remote, o)
}

// AdoptIP is DialIP for a socket an earlier process made (see AdoptUDP),
// of either kind.
func AdoptIP(f *os.File, local, remote netip.Addr) (Conn, error) {
	return openIP(f, local, remote, IPOptions{})
}

// HeaderRoom is what an IP tunnel's WriteBatch needs before offset: the
// largest IP header it writes (IPv6). Less is copied.
const HeaderRoom = ipv6.HeaderLen

func openIP(f *os.File, local, remote netip.Addr, o IPOptions) (Conn, error) {
	v6 := local.Is6()
	if remote.Is6() != v6 {
		if f != nil {
			f.Close()
		}
		return nil, &net.OpError{Op: "dial", Net: "ip", Err: unix.EINVAL}
	}
	hdrincl := !o.Proto115
	if f != nil {
		// A kept socket is used as it was made.
		p, err := sockProtocol(f)
		if err != nil {
			f.Close()
			return nil, err
		}
		hdrincl = p == unix.IPPROTO_RAW
	}
	set := func(fd int) error {
		if hdrincl {
			// The kernel hands it protocol-255 packets from the
			// remote: dropped by the filter, never queued. The
			// header it sends says DF off.
			return dropAll(fd)
		}
		bufSize(fd, SocketBuffer)
		if err := dropAll(fd); err != nil {
			return err
		}
		return noDF(fd, v6)
	}
	nw := network("ip", local) + proto
	if hdrincl {
		nw = network("ip", local) + ":" + strconv.Itoa(unix.IPPROTO_RAW)
	}
	var c net.Conn
	var err error
	if f == nil {
		c, err = dial(nw, &net.IPAddr{IP: local.AsSlice()}, remote.String(), set)
	} else if c, err = adopt(f, "ip", netip.AddrPortFrom(local, 0), netip.AddrPortFrom(remote, 0), set); err == nil {
		err = reconnect(c, remote)
	}
	conn, err := wrap(c, v6, err)
	if err != nil || !hdrincl {
		return conn, err
	}
	return newHdrTx(conn.(*sock), local, remote)
}

// dropAll attaches a classic BPF program that accepts nothing.
func dropAll(fd int) error {
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &prog[0]})
}

// ListenIP makes the namespace-wide receive socket for IP encapsulation of
// one family: every protocol-115 packet delivered to this host, from any
// source, as the kernel's l2tp_ip handler sees them. Offsets passed to its
// ReadBatch need 20 bytes of headroom for IPv4 (the header lands there).
func ListenIP(v6 bool) (Reader, func() error, error) { return listenIP(nil, v6) }

// AdoptListenIP is ListenIP for a socket an earlier process made (see
// AdoptUDP); File duplicates it.
func AdoptListenIP(f *os.File, v6 bool) (Reader, func() error, error) { return listenIP(f, v6) }

func listenIP(f *os.File, v6 bool) (Reader, func() error, error) {
	nw, addr := "ip4"+proto, netip.IPv4Unspecified()
	if v6 {
		nw, addr = "ip6"+proto, netip.IPv6Unspecified()
	}
	set := func(fd int) error { bufSize(fd, SocketBuffer); return nil }
	var c net.Conn
	if f == nil {
		lc := net.ListenConfig{Control: sockopts(set)}
		pc, err := lc.ListenPacket(context.Background(), nw, addr.String())
		if err != nil {
			return nil, nil, err
		}
		c = pc.(net.Conn)
	} else {
		var err error
		if c, err = adopt(f, "ip", netip.AddrPortFrom(addr, 0), netip.AddrPort{}, set); err != nil {
			return nil, nil, err
		}
	}
	s, err := newSock(c, v6)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	s.skipIP = !v6
	if v6 {
		// The IPv6 listener takes ICMPv6 errors about protocol 115
		// (IPV6_RECVERR): a Packet Too Big then lowers the route's
		// MTU, which the tunnels' IPPROTO_RAW sockets (no ICMP reaches
		// them) fragment to. Errors reach its reads once each; its
		// error queue is emptied then.
		var serr error
		s.rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1) })
		if serr != nil {
			c.Close()
			return nil, nil, serr
		}
		s.bc.(*recvBatch).errQueue = true
	}
	return s, s.Close, nil
}

// sockProtocol is a socket's protocol (SO_PROTOCOL), read without making
// its description blocking (as File.Fd would).
func sockProtocol(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var p int
	var serr error
	if err := rc.Control(func(fd uintptr) { p, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) }); err != nil {
		return 0, err
	}
	return p, serr
}

// reconnect connects an adopted raw socket to remote again: its peer cannot
// be read back, and this makes sure of it (and renews its route).
func reconnect(c net.Conn, remote netip.Addr) error {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err == nil {
		err = connectRaw(rc, remote)
	}
	if err != nil {
		c.Close()
	}
	return err
}

// connectRaw connects a raw socket to remote (again).
func connectRaw(rc syscall.RawConn, remote netip.Addr) error {
	var sa unix.Sockaddr
	if remote.Is6() {
		sa = &unix.SockaddrInet6{Addr: remote.As16()}
	} else {
		sa = &unix.SockaddrInet4{Addr: remote.As4()}
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), sa) }); err != nil {
		return err
	}
	return cerr
}
