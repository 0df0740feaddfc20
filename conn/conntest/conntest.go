// Package conntest is an in-memory IP network of tunnel sockets for tests
// of the data path without root. A Net joins hosts; each Host opens
// sockets as package conn does (DialUDP, DialIP, ListenIP). A UDP message
// goes to the socket bound to its destination and connected to its source,
// as the kernel's connected UDP sockets take it; an IP (protocol 115)
// message goes to the listener of the host that owns its destination. A
// test plays a peer with sockets of its own on the Net, or injects what no
// peer would send.
package conntest

import (
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/l2tpu/l2tpu/conn"
	"github.com/l2tpu/l2tpu/internal/memq"
)

// QueueLimit is how many messages wait in a socket (more are dropped, as
// a full receive buffer drops).
const QueueLimit = 8192

// Net is the network.
type Net struct {
	mu        sync.Mutex
	udp       map[netip.AddrPort]*Conn // bound sockets by local address
	listeners map[netip.Addr]*Listener // IP listeners by each address of their host
}

// NewNet is an empty network.
func NewNet() *Net {
	return &Net{udp: map[netip.AddrPort]*Conn{}, listeners: map[netip.Addr]*Listener{}}
}

// Host is one host of the network, owning addrs.
type Host struct {
	n     *Net
	addrs []netip.Addr
	// PathMTU is what its sockets report (1500 if zero).
	PathMTU int
}

// Host adds a host owning addrs.
func (n *Net) Host(addrs ...netip.Addr) *Host { return &Host{n: n, addrs: addrs} }

func (h *Host) owns(a netip.Addr) bool {
	for _, o := range h.addrs {
		if o == a.Unmap() {
			return true
		}
	}
	return false
}

func (h *Host) mtu() int {
	if h.PathMTU == 0 {
		return 1500
	}
	return h.PathMTU
}

// DialUDP is conn.DialUDP: a socket bound to local, connected to remote.
func (h *Host) DialUDP(local, remote netip.AddrPort, _ conn.UDPOptions) (conn.Conn, error) {
	return h.dialUDP(local, remote)
}

// Peer is DialUDP for a test playing the peer: its *Conn has Recv.
func (h *Host) Peer(local, remote netip.AddrPort) (*Conn, error) { return h.dialUDP(local, remote) }

func (h *Host) dialUDP(local, remote netip.AddrPort) (*Conn, error) {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if !h.owns(local.Addr()) {
		return nil, fmt.Errorf("conntest: bind %s: %w", local, syscall.EADDRNOTAVAIL)
	}
	h.n.mu.Lock()
	defer h.n.mu.Unlock()
	if h.n.udp[local] != nil {
		return nil, fmt.Errorf("conntest: bind %s: %w", local, syscall.EADDRINUSE)
	}
	c, err := newConn(h, local, remote, false)
	if err != nil {
		return nil, err
	}
	h.n.udp[local] = c
	return c, nil
}

// DialIP is conn.DialIP: a socket that sends to remote and reads nothing
// (the host's listener reads every IP tunnel's messages).
func (h *Host) DialIP(local, remote netip.Addr, _ conn.IPOptions) (conn.Conn, error) {
	local, remote = local.Unmap(), remote.Unmap()
	if !h.owns(local) {
		return nil, fmt.Errorf("conntest: bind %s: %w", local, syscall.EADDRNOTAVAIL)
	}
	return newConn(h, netip.AddrPortFrom(local, 0), netip.AddrPortFrom(remote, 0), true)
}

// ListenIP is conn.ListenIP: the host's protocol-115 listener of one
// family.
func (h *Host) ListenIP(v6 bool) (conn.Reader, func() error, error) {
	q, err := memq.New(QueueLimit)
	if err != nil {
		return nil, nil, err
	}
	l := &Listener{q: q}
	h.n.mu.Lock()
	defer h.n.mu.Unlock()
	for _, a := range h.addrs {
		if a.Is6() == v6 {
			if h.n.listeners[a] != nil {
				q.Close()
				return nil, nil, fmt.Errorf("conntest: a second IP listener on %s", a)
			}
			h.n.listeners[a] = l
		}
	}
	closeFn := func() error {
		h.n.mu.Lock()
		for a, o := range h.n.listeners {
			if o == l {
				delete(h.n.listeners, a)
			}
		}
		h.n.mu.Unlock()
		return q.Close()
	}
	return l, closeFn, nil
}

// Listener is a host's IP listener.
type Listener struct{ q *memq.Queue }

// Inject queues msgs as if they came to the listener (from any source).
func (l *Listener) Inject(msgs ...[]byte) { l.q.Push(msgs...) }

func (l *Listener) WaitRead() error { return l.q.Wait() }
func (l *Listener) PollFD() int     { return l.q.FD() }
func (l *Listener) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	return l.q.Read(bufs, sizes, offset)
}

// Conn is a connected socket.
type Conn struct {
	h             *Host
	local, remote netip.AddrPort
	ip            bool
	q             *memq.Queue
	sent          atomic.Uint64
	closed        atomic.Bool
}

var (
	_ conn.Conn   = (*Conn)(nil)
	_ conn.Reader = (*Listener)(nil)
)

func newConn(h *Host, local, remote netip.AddrPort, ip bool) (*Conn, error) {
	q, err := memq.New(QueueLimit)
	if err != nil {
		return nil, err
	}
	return &Conn{h: h, local: local, remote: remote, ip: ip, q: q}, nil
}

// Inject queues msgs as if they came from the connected peer.
func (c *Conn) Inject(msgs ...[]byte) { c.q.Push(msgs...) }

// Recv is the next message received, or false after timeout.
func (c *Conn) Recv(timeout time.Duration) ([]byte, bool) { return c.q.Pop(timeout) }

// Received is how many messages ever came to the socket.
func (c *Conn) Received() uint64 { return c.q.Pushed() }

// Sent is how many messages were written.
func (c *Conn) Sent() uint64 { return c.sent.Load() }

func (c *Conn) WaitRead() error { return c.q.Wait() }
func (c *Conn) PollFD() int     { return c.q.FD() }
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	return c.q.Read(bufs, sizes, offset)
}

// WriteBatch delivers each message to the socket or listener its
// destination names, or nowhere (as a datagram to a closed port).
func (c *Conn) WriteBatch(bufs [][]byte, offset int) (int, error) {
	if c.closed.Load() {
		return 0, os.ErrClosed
	}
	c.h.n.mu.Lock()
	var push func(...[]byte) int
	if c.ip {
		if l := c.h.n.listeners[c.remote.Addr()]; l != nil {
			push = l.q.Push
		}
	} else if d := c.h.n.udp[c.remote]; d != nil && d.remote == c.local {
		push = d.q.Push
	}
	c.h.n.mu.Unlock()
	for _, b := range bufs {
		if push != nil {
			push(b[offset:])
		}
	}
	c.sent.Add(uint64(len(bufs)))
	return len(bufs), nil
}

func (c *Conn) PathMTU() int       { return c.h.mtu() }
func (c *Conn) ICMPErrors() uint64 { return 0 }

// File: an in-memory socket has no descriptor for a keeper to hold.
func (c *Conn) File() (*os.File, error) { return nil, fmt.Errorf("conntest: %w", os.ErrInvalid) }

func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return os.ErrClosed
	}
	if !c.ip {
		c.h.n.mu.Lock()
		if c.h.n.udp[c.local] == c {
			delete(c.h.n.udp, c.local)
		}
		c.h.n.mu.Unlock()
	}
	return c.q.Close()
}
