package conn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/netns"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

type pair struct {
	a, b     *privtest.NS
	aIf, bIf string
	a4, b4   netip.Addr
	a6, b6   netip.Addr
}

func newPair(t *testing.T) *pair {
	privtest.Require(t)
	p := privtest.Prefix()
	pr := &pair{a: privtest.NewNS(t, p+"a"), b: privtest.NewNS(t, p+"b"), aIf: p + "va", bIf: p + "vb",
		a4: netip.MustParseAddr("192.0.2.1"), b4: netip.MustParseAddr("192.0.2.2"),
		a6: netip.MustParseAddr("2001:db8:1::1"), b6: netip.MustParseAddr("2001:db8:1::2")}
	privtest.Veth(t, pr.a, pr.aIf, pr.b, pr.bIf)
	pr.a.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", pr.aIf)
	pr.b.Run(t, "ip", "addr", "add", "192.0.2.2/24", "dev", pr.bIf)
	pr.a.Run(t, "ip", "addr", "add", "2001:db8:1::1/64", "dev", pr.aIf, "nodad")
	pr.b.Run(t, "ip", "addr", "add", "2001:db8:1::2/64", "dev", pr.bIf, "nodad")
	return pr
}

func in[T any](t *testing.T, ns *privtest.NS, f func() (T, error)) T {
	t.Helper()
	var v T
	if err := netns.Do(ns.Path(), func() (err error) { v, err = f(); return err }); err != nil {
		t.Fatal(err)
	}
	return v
}

func ap(a netip.Addr, p uint16) netip.AddrPort { return netip.AddrPortFrom(a, p) }

func msgs(n, size int, head int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, head+size)
		binary.BigEndian.PutUint32(b[head:], uint32(i))
		out[i] = b
	}
	return out
}

// readN reads n messages from r within a few seconds.
func readN(t *testing.T, r Reader, n int, offset int) [][]byte {
	t.Helper()
	bufs := make([][]byte, MaxBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
	}
	sizes := make([]int, MaxBatch)
	var out [][]byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(out) < n {
			if err := r.WaitRead(); err != nil {
				return
			}
			k, err := r.ReadBatch(bufs, sizes, offset)
			if err != nil {
				return
			}
			for i := 0; i < k; i++ {
				out = append(out, append([]byte(nil), bufs[i][offset:offset+sizes[i]]...))
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("got %d of %d messages", len(out), n)
	}
	return out
}

func udpOf(f []byte) (*layers.UDP, gopacket.NetworkLayer) {
	p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	u, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	return u, p.NetworkLayer()
}

func TestUDPRoundTripAndWire(t *testing.T) {
	pr := newPair(t)
	for _, tc := range []struct {
		name     string
		la, lb   netip.Addr
		oa, ob   UDPOptions
		zeroCsum bool
	}{
		{"v4 default", pr.a4, pr.b4, UDPOptions{}, UDPOptions{}, true},
		{"v4 udp_csum on", pr.a4, pr.b4, UDPOptions{Csum4: true}, UDPOptions{}, false},
		{"v4 udp_csum on, GSO", pr.a4, pr.b4, UDPOptions{Csum4: true, GSO: true}, UDPOptions{}, false},
		{"v4 default with GSO: real checksums", pr.a4, pr.b4, UDPOptions{GSO: true}, UDPOptions{}, false},
		{"v6 default", pr.a6, pr.b6, UDPOptions{}, UDPOptions{}, false},
		{"v6 GSO", pr.a6, pr.b6, UDPOptions{GSO: true}, UDPOptions{}, false},
		{"v4 GSO to GRO", pr.a4, pr.b4, UDPOptions{Csum4: true, GSO: true}, UDPOptions{GRO: true}, false},
		{"v6 GSO to GRO", pr.a6, pr.b6, UDPOptions{GSO: true}, UDPOptions{GRO: true}, false},
		{"v4 plain to GRO", pr.a4, pr.b4, UDPOptions{}, UDPOptions{GRO: true}, true},
		{"v6 zero csum", pr.a6, pr.b6, UDPOptions{ZeroCsum6Tx: true}, UDPOptions{ZeroCsum6Rx: true}, true},
		{"v6 zero csum with GSO: real checksums", pr.a6, pr.b6, UDPOptions{ZeroCsum6Tx: true, GSO: true}, UDPOptions{ZeroCsum6Rx: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := in(t, pr.a, func() (Conn, error) { return DialUDP(ap(tc.la, 1701), ap(tc.lb, 1702), tc.oa) })
			defer a.Close()
			b := in(t, pr.b, func() (Conn, error) { return DialUDP(ap(tc.lb, 1702), ap(tc.la, 1701), tc.ob) })
			defer b.Close()
			capt := privtest.NewCapture(t, pr.b, pr.bIf)
			// 70 messages (more than one batch), one of them bigger than
			// the path MTU: fragmented locally (DF off) and reassembled.
			out := msgs(70, 100, 8)
			out[5] = append(out[5], make([]byte, 3000)...)
			out[40] = out[40][:50] // a shorter one ends a GSO run
			if s, ok := a.(*sock); ok && s.gso.Load() != tc.oa.GSO {
				t.Fatalf("GSO enabled %v", s.gso.Load())
			}
			if n, err := a.WriteBatch(out, 8); n != 70 || err != nil {
				t.Fatalf("WriteBatch %d %v", n, err)
			}
			got := readN(t, b, 70, 8)
			for i := range got {
				if !bytes.Equal(got[i], out[i][8:]) {
					t.Fatalf("message %d differs", i)
				}
			}
			if mtu := a.PathMTU(); mtu != 1500 {
				t.Errorf("path MTU %d", mtu)
			}
			frames := capt.Collect(200*time.Millisecond, func(f []byte, _ bool) bool { _, nl := udpOf(f); return nl != nil })
			whole, frags := 0, 0
			for _, f := range frames {
				u, nl := udpOf(f)
				if ip4, ok := nl.(*layers.IPv4); ok && ip4.Flags&layers.IPv4DontFragment != 0 {
					t.Fatal("DF set")
				}
				if u == nil { // a fragment of the 3100-byte message
					frags++
					continue
				}
				whole++
				if (u.Checksum == 0) != tc.zeroCsum {
					t.Fatalf("UDP checksum %#x, zero expected %v", u.Checksum, tc.zeroCsum)
				}
			}
			gso := tc.oa.GSO
			switch {
			case frags < 3:
				t.Fatalf("%d fragments of the oversized message", frags)
			case gso && (whole == 0 || whole >= 69):
				// On a veth a GSO send stays one packet up to the receiver.
				t.Fatalf("GSO on, yet %d separate datagrams", whole)
			case !gso && whole != 69:
				t.Fatalf("captured %d datagrams; want 69", whole)
			}
		})
	}
}

// TestUDPZeroChecksumDroppedByDefault: IPv6 datagrams with checksum 0 are
// dropped unless udp6_csum_rx is off. The positive controls: the same
// sender's datagrams with checksums arrive, after the zero-checksum ones
// (so those were dropped, not queued), and a receiver with udp6_csum_rx
// off takes zero-checksum ones.
func TestUDPZeroChecksumDroppedByDefault(t *testing.T) {
	pr := newPair(t)
	a := in(t, pr.a, func() (Conn, error) {
		return DialUDP(ap(pr.a6, 1701), ap(pr.b6, 1701), UDPOptions{ZeroCsum6Tx: true})
	})
	b := in(t, pr.b, func() (Conn, error) { return DialUDP(ap(pr.b6, 1701), ap(pr.a6, 1701), UDPOptions{}) })
	defer b.Close()
	if n, err := a.WriteBatch(msgs(3, 50, 0), 0); n != 3 || err != nil {
		t.Fatalf("zero-checksum send: %d %v", n, err)
	}
	a.Close()
	a = in(t, pr.a, func() (Conn, error) { return DialUDP(ap(pr.a6, 1701), ap(pr.b6, 1701), UDPOptions{}) })
	if n, err := a.WriteBatch(msgs(1, 77, 0), 0); n != 1 || err != nil {
		t.Fatalf("checksummed send: %d %v", n, err)
	}
	a.Close()
	if got := readN(t, b, 1, 0); len(got[0]) != 77 {
		t.Fatalf("read a %d-byte datagram first: a zero-checksum one was accepted with udp6_csum_rx on", len(got[0]))
	}
	// udp6_csum_rx off: accepted.
	rx := in(t, pr.b, func() (Conn, error) {
		return DialUDP(ap(pr.b6, 1702), ap(pr.a6, 1701), UDPOptions{ZeroCsum6Rx: true})
	})
	defer rx.Close()
	tx := in(t, pr.a, func() (Conn, error) {
		return DialUDP(ap(pr.a6, 1701), ap(pr.b6, 1702), UDPOptions{ZeroCsum6Tx: true})
	})
	defer tx.Close()
	if n, err := tx.WriteBatch(msgs(1, 50, 0), 0); n != 1 || err != nil {
		t.Fatalf("zero-checksum send: %d %v", n, err)
	}
	if got := readN(t, rx, 1, 0); len(got[0]) != 50 {
		t.Fatalf("read %d bytes, want the 50-byte zero-checksum datagram", len(got[0]))
	}
}

func TestUDPOnlyPeerAccepted(t *testing.T) {
	pr := newPair(t)
	a := in(t, pr.a, func() (Conn, error) { return DialUDP(ap(pr.a4, 1701), ap(pr.b4, 1701), UDPOptions{}) })
	defer a.Close()
	// Right address, wrong port.
	other := in(t, pr.b, func() (Conn, error) { return DialUDP(ap(pr.b4, 1799), ap(pr.a4, 1701), UDPOptions{}) })
	defer other.Close()
	other.WriteBatch(msgs(3, 50, 0), 0)
	time.Sleep(200 * time.Millisecond)
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	if n, _ := a.ReadBatch(bufs, sizes, 0); n != 0 {
		t.Fatal("datagram from a non-peer port delivered")
	}
	peer := in(t, pr.b, func() (Conn, error) { return DialUDP(ap(pr.b4, 1701), ap(pr.a4, 1701), UDPOptions{}) })
	defer peer.Close()
	peer.WriteBatch(msgs(1, 50, 0), 0)
	readN(t, a, 1, 0)
}

func TestDialErrors(t *testing.T) {
	pr := newPair(t)
	first := in(t, pr.a, func() (Conn, error) { return DialUDP(ap(pr.a4, 1701), ap(pr.b4, 1701), UDPOptions{}) })
	defer first.Close()
	for _, tc := range []struct {
		name string
		dial func() (Conn, error)
		want error
	}{
		{"port in use", func() (Conn, error) { return DialUDP(ap(pr.a4, 1701), ap(pr.b4, 1702), UDPOptions{}) }, unix.EADDRINUSE},
		{"local not ours", func() (Conn, error) {
			return DialUDP(ap(netip.MustParseAddr("192.0.2.77"), 1701), ap(pr.b4, 1701), UDPOptions{})
		}, unix.EADDRNOTAVAIL},
		{"no route", func() (Conn, error) {
			return DialUDP(ap(pr.a4, 1703), ap(netip.MustParseAddr("203.0.113.9"), 1701), UDPOptions{})
		}, unix.ENETUNREACH},
		{"no route v6", func() (Conn, error) {
			return DialUDP(ap(pr.a6, 1703), ap(netip.MustParseAddr("2001:db8:99::9"), 1701), UDPOptions{})
		}, unix.ENETUNREACH},
		{"mixed families", func() (Conn, error) { return DialUDP(ap(pr.a4, 1704), ap(pr.b6, 1701), UDPOptions{}) }, unix.EINVAL},
		{"ip local not ours", func() (Conn, error) { return DialIP(netip.MustParseAddr("192.0.2.77"), pr.b4, IPOptions{}) }, unix.EADDRNOTAVAIL},
		{"ip no route", func() (Conn, error) { return DialIP(pr.a4, netip.MustParseAddr("203.0.113.9"), IPOptions{}) }, unix.ENETUNREACH},
	} {
		err := netns.Do(pr.a.Path(), func() error {
			c, err := tc.dial()
			if err == nil {
				c.Close()
			}
			return err
		})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestIP(t *testing.T) {
	pr := newPair(t)
	for _, fam := range []struct {
		name   string
		la, lb netip.Addr
		v6     bool
	}{{"v4", pr.a4, pr.b4, false}, {"v6", pr.a6, pr.b6, true}} {
		// The header written here (and, with room for it before the
		// offset, in place) and the kernel's (Proto115).
		for _, c := range []struct {
			name string
			o    IPOptions
			off  int
		}{{"hdrincl", IPOptions{}, 8}, {"hdrincl-room", IPOptions{}, HeaderRoom + 8}, {"proto115", IPOptions{Proto115: true}, 8}} {
			t.Run(fam.name+"-"+c.name, func(t *testing.T) {
				a := in(t, pr.a, func() (Conn, error) { return DialIP(fam.la, fam.lb, c.o) })
				defer a.Close()
				b := in(t, pr.b, func() (Conn, error) { return DialIP(fam.lb, fam.la, c.o) })
				defer b.Close()
				type rx struct {
					r     Reader
					close func() error
				}
				l := in(t, pr.b, func() (rx, error) { r, c, err := ListenIP(fam.v6); return rx{r, c}, err })
				defer l.close()
				out := msgs(10, 100, c.off)
				out[3] = append(out[3], make([]byte, 3000)...) // fragmented and reassembled
				out[6] = append(out[6], make([]byte, 9000)...)
				if n, err := a.WriteBatch(out, c.off); n != 10 || err != nil {
					t.Fatalf("WriteBatch %d %v", n, err)
				}
				got := readN(t, l.r, 10, 64)
				for i := range got {
					if !bytes.Equal(got[i], out[i][c.off:]) {
						t.Fatalf("message %d: %d bytes %x", i, len(got[i]), got[i][:8])
					}
				}
				// The transmit socket itself queues nothing.
				bufs, sizes := [][]byte{make([]byte, 4096)}, []int{0}
				if n, _ := b.ReadBatch(bufs, sizes, 64); n != 0 {
					t.Fatal("transmit socket received a packet")
				}
			})
		}
	}
}

// TestPartialSends: with a send buffer smaller than a batch and a slow
// link (a token bucket holds the packets, charged to the socket, as a real
// NIC's queue does; veth alone frees them at once), sendmmsg stops
// part-way and reports the messages before the one that would not fit;
// WriteBatch goes on from there once the socket is writable again, so
// every message is sent once, in order, and GSO stays on.
func TestPartialSends(t *testing.T) {
	pr := newPair(t)
	pr.a.Run(t, "tc", "qdisc", "add", "dev", pr.aIf, "root", "tbf", "rate", "20mbit", "burst", "16kb", "limit", "1mb")
	for _, o := range []UDPOptions{{}, {GSO: true}} {
		a := in(t, pr.a, func() (Conn, error) { return DialUDP(ap(pr.a4, 1701), ap(pr.b4, 1702), o) })
		b := in(t, pr.b, func() (Conn, error) { return DialUDP(ap(pr.b4, 1702), ap(pr.a4, 1701), UDPOptions{}) })
		s := a.(*sock)
		s.rc.Control(func(fd uintptr) {
			// The smallest the kernel allows: a few messages at a time.
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4096)
		})
		const n = 300
		out := msgs(n, 1200, 8)
		for i := range out {
			if i%2 == 1 {
				out[i] = out[i][:8+600] // no GSO runs: one message per frame
			}
		}
		got := make(chan [][]byte, 1)
		go func() { got <- readN(t, b, n, 8) }()
		sent := 0
		for sent < n {
			k, err := a.WriteBatch(out[sent:min(sent+MaxBatch, n)], 8)
			if err != nil {
				t.Fatalf("GSO %v: WriteBatch after %d: %d, %v", o.GSO, sent, k, err)
			}
			sent += k
		}
		msgs := <-got
		for i := range msgs {
			if !bytes.Equal(msgs[i], out[i][8:]) {
				t.Fatalf("GSO %v: message %d differs (lost, repeated or reordered)", o.GSO, i)
			}
		}
		if s.gso.Load() != o.GSO {
			t.Fatalf("GSO on %v, want %v", s.gso.Load(), o.GSO)
		}
		a.Close()
		b.Close()
	}
}
