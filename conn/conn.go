// Package conn is the tunnel side of the dataplane: sockets that carry L2TP
// messages, read and written in batches (recvmmsg/sendmmsg through x/net's
// ipv4/ipv6 ReadBatch/WriteBatch).
//
// Sockets are set up the way the kernel sets up its tunnel sockets
// (net/l2tp l2tp_tunnel_sock_create): bound to the local address and
// connected to the peer, outer DF off with local fragmentation, and the
// tunnel's UDP checksum options.
package conn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/poll"
)

// Message is one packet of a batch; the ipv4 and ipv6 types are the same.
type Message = ipv4.Message

// Reader is the receive side of a tunnel socket.
type Reader interface {
	// WaitRead returns when a packet is waiting (holding no buffers), or
	// an error once the socket is closed.
	WaitRead() error
	// PollFD is an fd that polls readable while a packet waits, for a
	// caller that waits on many sockets at once (epoll); valid until
	// Close. After a ReadBatch that filled every buffer, more may be
	// waiting that the fd does not show (the rest of a coalesced read):
	// read again.
	PollFD() int
	// ReadBatch reads up to len(bufs) waiting L2TP messages into
	// bufs[i][offset:] without blocking. For IP encapsulation the message
	// starts after the IP header. It may instead replace bufs[i] with a
	// slice of its own memory holding the message at offset (UDP GRO,
	// offset <= GROHeadroom): valid, and not to be written before offset,
	// until the next ReadBatch; callers that reuse their buffers keep
	// their own copy of the slice headers.
	ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error)
}

// Writer is the transmit side of a tunnel socket: each bufs[i][offset:] is
// one L2TP message to the peer. It returns how many were sent and the last
// error; a message that fails is skipped, the others are still sent.
type Writer interface {
	WriteBatch(bufs [][]byte, offset int) (int, error)
}

// Conn is a connected tunnel socket.
type Conn interface {
	Reader
	Writer
	// PathMTU is the MTU of the route to the peer (0 if unknown).
	PathMTU() int
	// ICMPErrors counts the errors that ICMP messages (port or host
	// unreachable, forged or not) left on the socket and a read or send
	// consumed: each was made again, no frame lost.
	ICMPErrors() uint64
	// File is a duplicate of the socket's descriptor, for a keeper that
	// holds it across a restart (see AdoptUDP).
	File() (*os.File, error)
	Close() error
}

// MaxBatch is the largest batch read or written in one system call.
const MaxBatch = 64

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// sock is every Conn this package makes.
var _ Conn = (*sock)(nil)

// sock holds a batch-capable socket and the message headers for its single
// reader; writers take theirs from a pool.
type sock struct {
	gso     atomic.Bool  // send runs of equal-size messages as one UDP GSO send
	gsoMax  atomic.Int64 // largest GSO segment: path MTU less IP and UDP headers
	c       net.Conn
	fd      int
	rc      syscall.RawConn
	waiter  *poll.Waiter
	bc      batchConn
	v6      bool
	rmsgs   []Message
	rbufs   [][]byte
	skipIP  bool        // IPv4 raw sockets deliver the IP header
	drained atomic.Bool // the last ReadBatch emptied the queue (read by WaitRead while another may read)
	groOn   bool        // UDP_GRO is set: reads go through readGRO
	gro     *groBufs    // a coalesced read still being handed out
	groDone *groBufs    // a coalesced read handed out, in use until the next read
}

var writeMsgs = sync.Pool{New: func() any { m := make([]Message, MaxBatch); return &m }}

func newSock(c net.Conn, v6 bool) (*sock, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("conn: %T has no raw fd", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &sock{c: c, rc: rc, v6: v6, waiter: poll.NewWaiter(rc)}
	s.drained.Store(true)
	rc.Control(func(fd uintptr) { s.fd = int(fd) })
	pc := c.(net.PacketConn)
	var bc batchConn
	if v6 {
		bc = ipv6PacketConn(pc)
	} else {
		bc = ipv4.NewPacketConn(pc)
	}
	s.bc = newRecvBatch(bc, rc)
	return s, nil
}

func (s *sock) WaitRead() error { return s.waiter.Wait(s.drained.Load()) }

func (s *sock) PollFD() int { return s.fd }

func (s *sock) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	if s.groOn {
		return s.readGRO(bufs, sizes, offset)
	}
	n := min(len(bufs), MaxBatch)
	if s.rmsgs == nil {
		s.rmsgs = make([]Message, MaxBatch)
		s.rbufs = make([][]byte, MaxBatch)
		for i := range s.rmsgs {
			s.rmsgs[i].Buffers = s.rbufs[i : i+1]
		}
	}
	head := offset
	if s.skipIP {
		// Land the payload at offset when the IPv4 header has no options.
		head = offset - ipv4.HeaderLen
	}
	for i := 0; i < n; i++ {
		s.rbufs[i] = bufs[i][head:]
	}
	got, err := s.bc.ReadBatch(s.rmsgs[:n], unix.MSG_DONTWAIT)
	// Non-blocking recvmmsg returns fewer than asked only when the queue
	// ran dry.
	s.drained.Store(err != nil || got < n)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) {
			return 0, nil
		}
		return 0, err
	}
	for i := 0; i < got; i++ {
		m := s.rmsgs[i].N
		if s.rmsgs[i].Flags&unix.MSG_TRUNC != 0 {
			sizes[i] = 0 // larger than the buffer: never deliver a cut frame
			continue
		}
		if s.skipIP {
			b := bufs[i][head:]
			ihl := ipv4.HeaderLen
			if m > 0 {
				ihl = int(b[0]&0xf) * 4
			}
			if m < ihl || ihl < ipv4.HeaderLen {
				sizes[i] = 0
				continue
			}
			if ihl != ipv4.HeaderLen {
				copy(bufs[i][offset:], b[ihl:m])
			}
			m -= ihl
		}
		sizes[i] = m
	}
	return got, nil
}

// gsoMaxSegments and gsoMaxBytes bound one UDP GSO send (the kernel's
// UDP_MAX_SEGMENTS is at least 64; a UDP payload at most 64 KiB).
const (
	gsoMaxSegments = 64
	gsoMaxBytes    = 65000
)

// writeGSO sends runs of messages of one size (the last of a run may be
// shorter) as single sendmmsg entries with a UDP_SEGMENT control message:
// the kernel carries each run through the stack as one packet and splits
// it at the last moment. Buffers are gathered, not copied. It returns how
// many of bufs were sent and the last error. When the route cannot do GSO
// (EIO on a run) it turns GSO off for the socket and sends the rest
// message by message.
func (s *sock) writeGSO(bufs [][]byte, offset int) (int, error) {
	mp := writeMsgs.Get().(*[]Message)
	defer writeMsgs.Put(mp)
	ms := *mp
	var runs, starts [MaxBatch]int // frames per message, and the first
	gsoMax := int(s.gsoMax.Load())
	sent := 0
	var lastErr error
	for done := 0; done < len(bufs); {
		nm := 0
		for i := done; i < len(bufs) && nm < MaxBatch; nm++ {
			j, size := gsoRun(bufs, i, offset, gsoMax)
			m := &ms[nm]
			m.Buffers = m.Buffers[:0]
			for k := i; k < j; k++ {
				m.Buffers = append(m.Buffers, bufs[k][offset:])
			}
			m.OOB = m.OOB[:0]
			if j-i > 1 {
				m.OOB = appendSegmentCmsg(m.OOB, size)
			}
			runs[nm], starts[nm] = j-i, i
			i = j
		}
		k, err := s.bc.WriteBatch(ms[:nm], 0)
		for i := 0; i < nm; i++ {
			clear(ms[i].Buffers)
			ms[i].OOB = ms[i].OOB[:0] // the pool is shared with writeBatch
		}
		k = max(k, 0)
		for i := 0; i < k; i++ {
			sent += runs[i]
			done += runs[i]
		}
		if k < nm && runs[k] > 1 && errors.Is(err, unix.EIO) {
			// The egress device cannot checksum for GSO: stop using
			// it, and send the rest message by message.
			s.gso.Store(false)
			m, werr := s.writeBatch(bufs[done:], offset)
			if werr == nil {
				werr = lastErr
			}
			return sent + m, werr
		}
		if k < nm {
			if err == nil {
				err = unix.EIO
			}
			r := bufs[starts[k] : starts[k]+runs[k]]
			if len(r) > 1 && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EMSGSIZE)) {
				// The path MTU fell below the segment size: learn the
				// new one and send this run message by message, which
				// the stack fragments as usual; the next runs fit.
				s.setGSOMax()
				gsoMax = int(s.gsoMax.Load())
				n, werr := s.writeBatch(r, offset)
				sent += n
				if werr != nil {
					lastErr = werr
				}
			} else {
				lastErr = err
			}
			done += runs[k]
		}
	}
	return sent, lastErr
}

// gsoRun groups messages for one GSO send: the run of bufs[i:j] that
// starts at i, whose messages (from offset on) are all of bufs[i]'s size
// but the last, which may be shorter, within the kernel's limits on
// segments and bytes. A message larger than gsoMax (what the path allows)
// runs alone, and the stack fragments it as usual. size is the segment
// size, bufs[i]'s.
func gsoRun(bufs [][]byte, i, offset, gsoMax int) (j, size int) {
	size = len(bufs[i]) - offset
	j, total := i+1, size
	for size <= gsoMax && j < len(bufs) && j-i < gsoMaxSegments {
		l := len(bufs[j]) - offset
		if l > size || total+l > gsoMaxBytes {
			break
		}
		total += l
		j++
		if l < size {
			break // a shorter message ends the run
		}
	}
	return j, size
}

// setGSOMax sets the largest GSO segment from the path MTU.
func (s *sock) setGSOMax() bool {
	hdr := 20 + 8
	if s.v6 {
		hdr = 40 + 8
	}
	if mtu := s.PathMTU(); mtu > hdr {
		s.gsoMax.Store(int64(mtu - hdr))
		return true
	}
	return false
}

// appendSegmentCmsg appends a SOL_UDP/UDP_SEGMENT control message.
func appendSegmentCmsg(b []byte, size int) []byte {
	n := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(2))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[n]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[n+unix.CmsgLen(0):], uint16(size))
	return b
}

func (s *sock) WriteBatch(bufs [][]byte, offset int) (int, error) {
	if s.gso.Load() && len(bufs) > 1 {
		return s.writeGSO(bufs, offset)
	}
	return s.writeBatch(bufs, offset)
}

func (s *sock) writeBatch(bufs [][]byte, offset int) (int, error) {
	sent := 0
	var lastErr error
	for done := 0; done < len(bufs); {
		k, err := s.writeUntil(bufs[done:], offset)
		sent += k
		done += k
		if done < len(bufs) {
			// sendmmsg stops at the first message that fails: count it as
			// lost and go on with the rest, as one send per packet would.
			lastErr = err
			done++
		}
	}
	return sent, lastErr
}

// writeUntil sends bufs[i][offset:] until one fails: it returns how many
// were sent and, if not all, the error of the next one.
func (s *sock) writeUntil(bufs [][]byte, offset int) (int, error) {
	mp := writeMsgs.Get().(*[]Message)
	defer writeMsgs.Put(mp)
	ms := *mp
	sent := 0
	for sent < len(bufs) {
		n := min(len(bufs)-sent, MaxBatch)
		for i := 0; i < n; i++ {
			ms[i].Buffers = append(ms[i].Buffers[:0], bufs[sent+i][offset:])
		}
		k, err := s.bc.WriteBatch(ms[:n], 0)
		for i := 0; i < n; i++ {
			ms[i].Buffers[0] = nil // drop the reference to the caller's buffer
		}
		k = max(k, 0)
		sent += k
		if k < n {
			if err == nil {
				err = unix.EIO
			}
			return sent, err
		}
	}
	return sent, nil
}

func (s *sock) PathMTU() int {
	var mtu int
	var gerr error
	err := s.rc.Control(func(fd uintptr) {
		if s.v6 {
			mtu, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU)
		} else {
			mtu, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU)
		}
	})
	if err != nil || gerr != nil {
		return 0
	}
	return mtu
}

// Close closes the socket. Buffers a read still holds are left to the
// garbage collector: the reader may be using them until it sees the close.
func (s *sock) Close() error { return s.c.Close() }

// sockopts returns a Dialer/ListenConfig Control function setting the
// options on the socket before bind and connect.
func sockopts(set func(fd int) error) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = set(int(fd)) }); err != nil {
			return err
		}
		return serr
	}
}

// noDF makes the kernel fragment oversize packets locally and send DF=0,
// as l2tp does (skb->ignore_df).
func noDF(fd int, v6 bool) error {
	if v6 {
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT)
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
}

// bufSize asks for large socket buffers: the forced variant where
// privileged, the ordinary one (capped by sysctl) otherwise.
func bufSize(fd int, n int) {
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], n) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], n)
		}
	}
}

// SocketBuffer is the size asked for tunnel sockets' buffers (the kernel
// doubles it). A buffer is a queue that every session of a tunnel waits in
// while its frames are delivered in arrival order: at 8 MiB a 64-byte
// flood kept 80 ms of frames there; the first frames of a light session
// wait behind them until the daemon serves it apart (dataplane's loops).
const SocketBuffer = 1 << 20

func network(proto string, a netip.Addr) string {
	if a.Is4() {
		return proto + "4"
	}
	return proto + "6"
}

func dial(network string, laddr net.Addr, raddr string, set func(fd int) error) (net.Conn, error) {
	d := net.Dialer{LocalAddr: laddr, Control: sockopts(set)}
	return d.DialContext(context.Background(), network, raddr)
}

// adopt checks that f is a socket of network ("udp" or "ip") bound to
// local and, where remote is valid, connected to remote, applies set to
// it, and makes it a net.Conn; f is closed either way.
func adopt(f *os.File, network string, local, remote netip.AddrPort, set func(fd int) error) (net.Conn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	var la, ra netip.AddrPort
	switch a := c.LocalAddr().(type) {
	case *net.UDPAddr:
		la = a.AddrPort()
		if r, _ := c.RemoteAddr().(*net.UDPAddr); r != nil {
			ra = r.AddrPort()
		}
	case *net.IPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		la = netip.AddrPortFrom(ip, 0)
		if r, _ := c.RemoteAddr().(*net.IPAddr); r != nil {
			rip, _ := netip.AddrFromSlice(r.IP)
			ra = netip.AddrPortFrom(rip, 0)
		}
	default:
		return nil, fmt.Errorf("conn: adopt: a %T, not a %s socket: %w", c, network, unix.EINVAL)
	}
	unmap := func(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
	// A raw socket has no peer name (getpeername needs a port): the
	// caller connects it again (openIP).
	peerKnown := ra.IsValid() || network != "ip"
	if (network == "udp") != (la.Port() != 0) || unmap(la) != unmap(local) || (remote.IsValid() && peerKnown && unmap(ra) != unmap(remote)) {
		return nil, fmt.Errorf("conn: adopt: the socket is %s→%s, not %s→%s: %w", la, ra, local, remote, unix.EINVAL)
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = set(int(fd)) }); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	ok = true
	return c, nil
}

func (s *sock) ICMPErrors() uint64 {
	if rb, ok := s.bc.(*recvBatch); ok {
		return rb.icmp.Load()
	}
	return 0
}

// File is a duplicate of the socket's descriptor.
func (s *sock) File() (*os.File, error) {
	fc, ok := s.c.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("conn: %T cannot be duplicated", s.c)
	}
	return fc.File()
}

// wrap turns a dialled socket into a Conn, closing it on failure.
func wrap(c net.Conn, v6 bool, err error) (Conn, error) {
	if err != nil {
		return nil, err
	}
	s, err := newSock(c, v6)
	if err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
