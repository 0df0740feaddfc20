package conn

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/privtest"
)

// TestFragment: fragments as the kernel cuts its own, which a decoder
// reads back into the message (no socket).
func TestFragment(t *testing.T) {
	msg := make([]byte, 3000)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	for _, v6 := range []bool{false, true} {
		hlen := 20
		if v6 {
			hlen = 40
		}
		pkt := make([]byte, hlen+len(msg))
		if v6 {
			pkt[0], pkt[6], pkt[7] = 0x60, 115, 64
			pkt[23], pkt[39] = 1, 2
		} else {
			pkt[0], pkt[8], pkt[9] = 0x45, 64, 115
			pkt[15], pkt[19] = 1, 2
		}
		copy(pkt[hlen:], msg)
		frags := fragment(pkt, v6, 1500, 0x1234abcd)
		if len(frags) != 3 {
			t.Fatalf("v6 %v: %d fragments, want 3", v6, len(frags))
		}
		var got []byte
		for i, f := range frags {
			if len(f) > 1500 {
				t.Fatalf("v6 %v: fragment %d is %d bytes", v6, i, len(f))
			}
			last := i == len(frags)-1
			if v6 {
				p := gopacket.NewPacket(f, layers.LayerTypeIPv6, gopacket.Default)
				fh, _ := p.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment)
				ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
				if fh == nil || fh.NextHeader != 115 || fh.MoreFragments == last || fh.Identification != 0x1234abcd ||
					int(fh.FragmentOffset)*8 != len(got) || int(ip.Length) != len(f)-40 || ip.HopLimit != 64 {
					t.Fatalf("v6 fragment %d: %+v %+v", i, fh, ip)
				}
				got = append(got, f[48:]...)
			} else {
				p := gopacket.NewPacket(f, layers.LayerTypeIPv4, gopacket.Default)
				ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
				mf := ip.Flags&layers.IPv4MoreFragments != 0
				if ip.Id != 0xabcd || mf == last || int(ip.FragOffset)*8 != len(got) || int(ip.Length) != len(f) ||
					ip.Protocol != 115 || ip.TTL != 64 || ip.Flags&layers.IPv4DontFragment != 0 {
					t.Fatalf("v4 fragment %d: %+v", i, ip)
				}
				got = append(got, f[20:]...)
			}
			if !last && (len(got))%8 != 0 {
				t.Fatalf("v6 %v: fragment %d ends at %d, not a multiple of 8", v6, i, len(got))
			}
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("v6 %v: reassembled %d bytes differ", v6, len(got))
		}
	}
	if fragment(make([]byte, 100), false, 24, 1) != nil {
		t.Error("an MTU with no room for 8 bytes of data gave fragments")
	}
	for _, v6 := range []bool{false, true} {
		if fragment(make([]byte, 70000), v6, 1500, 1) != nil {
			t.Errorf("v6 %v: a message longer than any datagram gave fragments", v6)
		}
		if fragment(make([]byte, 0xffff-8), v6, 1500, 1) == nil {
			t.Errorf("v6 %v: the longest datagram gave no fragments", v6)
		}
	}
}

// TestIPRouteChange: the route to the peer gets a smaller MTU after the
// tunnel's socket was made (IPv6: routers do not fragment). Every message
// still arrives, fragmented to the new MTU, and no ICMP retry is counted
// (none reaches an IPPROTO_RAW socket). The earlier protocol-115 path is
// the control.
func TestIPRouteChange(t *testing.T) {
	pr := newPair(t)
	for _, o := range []IPOptions{{}, {Proto115: true}} {
		a := in(t, pr.a, func() (Conn, error) { return DialIP(pr.a6, pr.b6, o) })
		defer a.Close()
		type rx struct {
			r     Reader
			close func() error
		}
		l := in(t, pr.b, func() (rx, error) { r, c, err := ListenIP(true); return rx{r, c}, err })
		defer l.close()
		pr.a.Run(t, "ip", "-6", "route", "replace", "2001:db8:1::2/128", "dev", pr.aIf, "mtu", "1300")
		for round := 0; round < 3; round++ {
			out := msgs(8, 1400, HeaderRoom)
			if n, err := a.WriteBatch(out, HeaderRoom); n != 8 || err != nil {
				t.Fatalf("proto115 %v, round %d: WriteBatch %d %v", o.Proto115, round, n, err)
			}
			got := readN(t, l.r, 8, 64)
			for i := range got {
				if !bytes.Equal(got[i], out[i][HeaderRoom:]) {
					t.Fatalf("proto115 %v, round %d: message %d differs", o.Proto115, round, i)
				}
			}
		}
		if n := a.ICMPErrors(); !o.Proto115 && n != 0 {
			t.Errorf("%d ICMP retries counted on an IPPROTO_RAW socket", n)
		}
		pr.a.Run(t, "ip", "-6", "route", "del", "2001:db8:1::2/128")
	}
}

// TestIPRawQueuesNothing: protocol-255 packets from the peer, which the
// kernel hands an IPPROTO_RAW socket, are not queued on it.
func TestIPRawQueuesNothing(t *testing.T) {
	pr := newPair(t)
	a := in(t, pr.a, func() (Conn, error) { return DialIP(pr.a4, pr.b4, IPOptions{}) })
	defer a.Close()
	// From B: protocol 255, the header written by the sender.
	b := in(t, pr.b, func() (int, error) { return unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW) })
	defer unix.Close(b)
	pkt := make([]byte, 20+100)
	pkt[0], pkt[8], pkt[9] = 0x45, 64, 255
	copy(pkt[12:], pr.b4.AsSlice())
	copy(pkt[16:], pr.a4.AsSlice())
	for i := 0; i < 50; i++ {
		if err := unix.Sendto(b, pkt, 0, &unix.SockaddrInet4{Addr: pr.a4.As4()}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	bufs, sizes := [][]byte{make([]byte, 4096)}, []int{0}
	if n, _ := a.ReadBatch(bufs, sizes, 64); n != 0 {
		t.Fatalf("the transmit socket queued %d protocol-255 packets", n)
	}
}

// TestIPv6PathMTU: a router's Packet Too Big for protocol 115 lowers the
// path MTU (the IPv6 listener takes it: IPV6_RECVERR), and the tunnel's
// messages are then fragmented to it and arrive; before, they are lost.
func TestIPv6PathMTU(t *testing.T) {
	privtest.Require(t)
	p := privtest.Prefix()
	a, r, b := privtest.NewNS(t, p+"a"), privtest.NewNS(t, p+"r"), privtest.NewNS(t, p+"b")
	privtest.Veth(t, a, p+"ar", r, p+"ra")
	privtest.Veth(t, r, p+"rb", b, p+"br")
	a.Run(t, "ip", "addr", "add", "2001:db8:1::1/64", "dev", p+"ar", "nodad")
	r.Run(t, "ip", "addr", "add", "2001:db8:1::ff/64", "dev", p+"ra", "nodad")
	r.Run(t, "ip", "addr", "add", "2001:db8:2::ff/64", "dev", p+"rb", "nodad")
	b.Run(t, "ip", "addr", "add", "2001:db8:2::2/64", "dev", p+"br", "nodad")
	r.Run(t, "ip", "link", "set", p+"rb", "mtu", "1300")
	b.Run(t, "ip", "link", "set", p+"br", "mtu", "1300")
	r.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	a.Run(t, "ip", "-6", "route", "add", "2001:db8:2::/64", "via", "2001:db8:1::ff")
	b.Run(t, "ip", "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:2::ff")
	la, lb := netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("2001:db8:2::2")
	type rx struct {
		r     Reader
		close func() error
	}
	// A's own listener, as every namespace with an IPv6 IP tunnel has.
	al := in(t, a, func() (rx, error) { r, c, err := ListenIP(true); return rx{r, c}, err })
	defer al.close()
	bl := in(t, b, func() (rx, error) { r, c, err := ListenIP(true); return rx{r, c}, err })
	defer bl.close()
	tx := in(t, a, func() (Conn, error) { return DialIP(la, lb, IPOptions{}) })
	defer tx.Close()
	bufs := make([][]byte, MaxBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 4096)
	}
	sizes := make([]int, MaxBatch)
	for round := 0; round < 10; round++ {
		out := msgs(4, 1400, HeaderRoom)
		tx.WriteBatch(out, HeaderRoom)
		got := 0
		for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); {
			n, _ := bl.r.ReadBatch(bufs, sizes, 64)
			got += n
			al.r.ReadBatch(bufs, sizes, 64) // A's listener reads on, as the daemon's does
			if got == len(out) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Fatal("1400-byte messages never arrived through a 1300-byte link: the Packet Too Big was not learned")
}

// TestAdoptIP: a kept IP transmit socket of either kind is adopted as it
// was made (a restarted daemon's), and sends; one of another tunnel's
// local address is refused.
func TestAdoptIP(t *testing.T) {
	pr := newPair(t)
	type rx struct {
		r     Reader
		close func() error
	}
	for _, c := range []struct {
		o      IPOptions
		la, lb netip.Addr
	}{{IPOptions{}, pr.a4, pr.b4}, {IPOptions{Proto115: true}, pr.a4, pr.b4}, {IPOptions{}, pr.a6, pr.b6}, {IPOptions{Proto115: true}, pr.a6, pr.b6}} {
		o := c.o
		l := in(t, pr.b, func() (rx, error) { r, c, err := ListenIP(c.la.Is6()); return rx{r, c}, err })
		first := in(t, pr.a, func() (Conn, error) { return DialIP(c.la, c.lb, o) })
		f, err := first.File()
		if err != nil {
			t.Fatal(err)
		}
		first.Close()
		adopted := in(t, pr.a, func() (Conn, error) { return AdoptIP(f, c.la, c.lb) })
		if _, hdr := adopted.(*hdrTx); hdr == o.Proto115 {
			t.Fatalf("proto115 %v: adopted as the other kind (%T)", o.Proto115, adopted)
		}
		out := msgs(3, 200, HeaderRoom)
		if n, err := adopted.WriteBatch(out, HeaderRoom); n != 3 || err != nil {
			t.Fatalf("proto115 %v: adopted socket sent %d: %v", o.Proto115, n, err)
		}
		readN(t, l.r, 3, 64)
		l.close()
		g, _ := adopted.File()
		adopted.Close()
		other := netip.MustParseAddr("192.0.2.9")
		if c.la.Is6() {
			other = netip.MustParseAddr("2001:db8:1::9")
		}
		if _, err := AdoptIP(g, other, c.lb); err == nil {
			t.Errorf("proto115 %v, %s: adopted for another local address", o.Proto115, c.la)
		}
	}
}
