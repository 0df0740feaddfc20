package dataplane

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/internal/netns"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

// env is two namespaces joined by veth (192.0.2.0/24, 2001:db8:1::/64).
type env struct {
	a, b     *privtest.NS
	aIf, bIf string
}

var (
	a4 = netip.MustParseAddr("192.0.2.1")
	b4 = netip.MustParseAddr("192.0.2.2")
	a6 = netip.MustParseAddr("2001:db8:1::1")
	b6 = netip.MustParseAddr("2001:db8:1::2")
)

func newEnv(t *testing.T) *env {
	t.Helper()
	privtest.Require(t)
	p := privtest.Prefix()
	e := &env{a: privtest.NewNS(t, p+"a"), b: privtest.NewNS(t, p+"b"), aIf: p + "va", bIf: p + "vb"}
	privtest.Veth(t, e.a, e.aIf, e.b, e.bIf)
	e.a.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", e.aIf)
	e.b.Run(t, "ip", "addr", "add", "192.0.2.2/24", "dev", e.bIf)
	e.a.Run(t, "ip", "addr", "add", "2001:db8:1::1/64", "dev", e.aIf, "nodad")
	e.b.Run(t, "ip", "addr", "add", "2001:db8:1::2/64", "dev", e.bIf, "nodad")
	return e
}

func newManager(t *testing.T, ns *privtest.NS) *Manager {
	t.Helper()
	m, err := New(Options{NetNS: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(true) })
	return m
}

// combo is one parameter combination of the pseudowire matrix.
type combo struct {
	encap   encap.Encap
	v6      bool
	cookie  int // 0, 4, 8
	l2spec  encap.L2Spec
	seqBoth bool
	reorder time.Duration // the sessions' reorder timeout (with seqBoth)
}

func (c combo) String() string {
	fam := "v4"
	if c.v6 {
		fam = "v6"
	}
	seq := "none"
	if c.seqBoth {
		seq = "both"
	}
	return fmt.Sprintf("%s-%s-c%d-l2%s-seq%s", c.encap, fam, c.cookie, c.l2spec, seq)
}

func cookieOf(t testing.TB, n int, b byte) encap.Cookie {
	c, err := encap.NewCookie(bytes.Repeat([]byte{b}, n))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tunnelPair returns mirrored tunnel configurations for A and B.
func tunnelPair(e encap.Encap, v6 bool) (TunnelConfig, TunnelConfig) {
	la, lb := a4, b4
	if v6 {
		la, lb = a6, b6
	}
	ta := TunnelConfig{TunnelID: 100, PeerTunnelID: 200, Encap: e, Local: la, Remote: lb, UDPSourcePort: 1701, UDPDestPort: 1702}
	tb := TunnelConfig{TunnelID: 200, PeerTunnelID: 100, Encap: e, Local: lb, Remote: la, UDPSourcePort: 1702, UDPDestPort: 1701}
	return ta, tb
}

// sessionPair returns mirrored session configurations: A sends cookie 0xaa..,
// B sends 0xbb...
func sessionPair(t testing.TB, c combo) (SessionConfig, SessionConfig) {
	sa := SessionConfig{TunnelID: 100, SessionID: 1001, PeerSessionID: 2002, L2Spec: c.l2spec,
		Cookie: cookieOf(t, c.cookie, 0xaa), PeerCookie: cookieOf(t, c.cookie, 0xbb), SendSeq: c.seqBoth, RecvSeq: c.seqBoth}
	sb := SessionConfig{TunnelID: 200, SessionID: 2002, PeerSessionID: 1001, L2Spec: c.l2spec,
		Cookie: cookieOf(t, c.cookie, 0xbb), PeerCookie: cookieOf(t, c.cookie, 0xaa), SendSeq: c.seqBoth, RecvSeq: c.seqBoth}
	sa.ReorderTimeout, sb.ReorderTimeout = c.reorder, c.reorder
	return sa, sb
}

// up gives a session interface an address, no IPv6, and brings it up.
func up(t *testing.T, ns *privtest.NS, ifname, cidr string) {
	t.Helper()
	ns.Run(t, "sysctl", "-qw", "net.ipv6.conf."+ifname+".disable_ipv6=1")
	ns.Run(t, "ip", "addr", "add", cidr, "dev", ifname)
	ns.Run(t, "ip", "link", "set", ifname, "up")
}

// ping reports whether at least want of count echo requests were answered.
func ping(ns *privtest.NS, addr string, count, want int) error {
	recv, out := ns.Ping(addr, count)
	if recv < want {
		return fmt.Errorf("ping %s: %d of %d answered (want %d)\n%s", addr, recv, count, want, out)
	}
	return nil
}

// tcpTransfer sends size random bytes over TCP from ns from to addr in ns to
// and checks they all arrive intact.
func tcpTransfer(t *testing.T, from, to *privtest.NS, addr string, size int) {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(to.Path(), func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		r.n, r.err = n, err
		copy(r.sum[:], h.Sum(nil))
		res <- r
	}()
	data := make([]byte, size)
	rand.Read(data)
	var c net.Conn
	if err := netns.Do(from.Path(), func() (err error) { c, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	r := <-res
	if r.err != nil || r.n != int64(size) || r.sum != sha256.Sum256(data) {
		t.Fatalf("TCP transfer: %d of %d bytes, err %v, intact %v", r.n, size, r.err, r.sum == sha256.Sum256(data))
	}
}
