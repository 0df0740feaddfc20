package conn

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/encap"
)

// proto is the ":115" of Go's "ip4:115" network names, from encap.IPProto.
var proto = ":" + strconv.Itoa(encap.IPProto)

func ipv6PacketConn(pc net.PacketConn) batchConn { return ipv6.NewPacketConn(pc) }

// DialIP makes a tunnel's transmit socket for IP encapsulation: a raw
// protocol-115 socket bound to local and connected to remote, as the kernel's
// l2tp_ip socket is (so local must be ours and remote routable). It receives
// nothing: a filter drops every packet, because IP-encap reception is
// namespace-wide ([ListenIP]).
func DialIP(local, remote netip.Addr) (Conn, error) { return openIP(nil, local, remote) }

// AdoptIP is DialIP for a socket an earlier process made (see AdoptUDP).
func AdoptIP(f *os.File, local, remote netip.Addr) (Conn, error) { return openIP(f, local, remote) }

func openIP(f *os.File, local, remote netip.Addr) (Conn, error) {
	v6 := local.Is6()
	if remote.Is6() != v6 {
		if f != nil {
			f.Close()
		}
		return nil, &net.OpError{Op: "dial", Net: "ip", Err: unix.EINVAL}
	}
	set := func(fd int) error {
		bufSize(fd, SocketBuffer)
		if err := dropAll(fd); err != nil {
			return err
		}
		return noDF(fd, v6)
	}
	var c net.Conn
	var err error
	if f == nil {
		c, err = dial(network("ip", local)+proto, &net.IPAddr{IP: local.AsSlice()}, remote.String(), set)
	} else {
		c, err = adopt(f, "ip", netip.AddrPortFrom(local, 0), netip.AddrPortFrom(remote, 0), set)
	}
	return wrap(c, v6, err)
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
	return s, s.Close, nil
}
