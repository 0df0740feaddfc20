package dataplane

import (
	"net/netip"
	"testing"

	"github.com/l2tpu/l2tpu/conn/conntest"
	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/tap/taptest"
)

// fakeSide is one Manager on in-memory devices and sockets: its TAPs in
// links, its sockets a host of a conntest.Net.
type fakeSide struct {
	m     *Manager
	links *taptest.Net
	host  *conntest.Host
}

// newFakeSide starts a Manager on a host owning addrs of net.
func newFakeSide(tb testing.TB, net *conntest.Net, o Options, addrs ...netip.Addr) *fakeSide {
	tb.Helper()
	f := &fakeSide{links: taptest.NewNet(addrs...), host: net.Host(addrs...)}
	o.Host = f.hostOf()
	var err error
	if f.m, err = New(o); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.m.Close(true) })
	return f
}

func (f *fakeSide) hostOf() Host {
	return Host{OpenTAP: f.links.Open, DialUDP: f.host.DialUDP, DialIP: f.host.DialIP, ListenIP: f.host.ListenIP, Links: f.links}
}

// dev is the fake device of the session interface named name.
func (f *fakeSide) dev(tb testing.TB, name string) *taptest.Device {
	tb.Helper()
	d := f.links.Device(name)
	if d == nil {
		tb.Fatalf("no device %s", name)
	}
	return d
}

// benchSession is one session of cfg in tunnel 1 of a Manager on fakes
// whose TAP discards what it is given: the loops find nothing to read, so
// a benchmark drives the session's transmit and receive itself.
func benchSession(tb testing.TB, e encap.Encap, cfg SessionConfig) (*Manager, *tunnel, *session, *conntest.Conn, *taptest.Device) {
	f := newFakeSide(tb, conntest.NewNet(), Options{}, a4)
	tc := TunnelConfig{TunnelID: 1, PeerTunnelID: 1, Encap: e, Local: a4, Remote: b4, UDPSourcePort: 1701, UDPDestPort: 1701}
	if err := f.m.AddTunnel(tc); err != nil {
		tb.Fatal(err)
	}
	name, err := f.m.AddSession(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	d := f.dev(tb, name)
	d.Discard()
	t := f.m.tunnels[1]
	return f.m, t, t.lookup(cfg.SessionID), t.conn.(*conntest.Conn), d
}

func benchCfg(seq bool) SessionConfig {
	c := encap.MustParseCookie("0102030405060708")
	return SessionConfig{TunnelID: 1, SessionID: 7, PeerSessionID: 7, Cookie: c, PeerCookie: c,
		L2Spec: encap.L2SpecDefault, SendSeq: seq, RecvSeq: seq}
}

// BenchmarkTransmit: one op is one frame of a full batch encapsulated in
// place and handed to the socket layer.
func BenchmarkTransmit(b *testing.B) {
	for _, seq := range []bool{false, true} {
		name := "seq-none"
		if seq {
			name = "seq-both"
		}
		b.Run(name, func(b *testing.B) {
			m, _, s, fc, _ := benchSession(b, encap.EncapUDP, benchCfg(seq))
			bt := m.getBatch()
			for i := range bt.sizes {
				bt.sizes[i] = 1400
			}
			b.SetBytes(1400)
			b.ReportAllocs()
			for i := 0; i < b.N; i += batchSize {
				s.transmit(bt, batchSize)
			}
			if fc.Sent() < uint64(b.N) {
				b.Fatal(fc.Sent())
			}
		})
	}
}

// BenchmarkReceive: one op is one message of a full batch classified,
// sequence-checked, counted and handed to the TAP.
func BenchmarkReceive(b *testing.B) {
	for _, seq := range []bool{false, true} {
		name := "seq-none"
		if seq {
			name = "seq-both"
		}
		b.Run(name, func(b *testing.B) {
			cfg := benchCfg(seq)
			m, t, _, _, fd := benchSession(b, encap.EncapUDP, cfg)
			wire := cfg.wire(encap.EncapUDP)
			peer := encap.Session{Encap: wire.Encap, SessionID: wire.PeerSessionID, PeerSessionID: wire.SessionID,
				Cookie: wire.PeerCookie, PeerCookie: wire.Cookie, L2Spec: wire.L2Spec}
			tx := encap.NewTxHeader(&peer)
			bt := m.getBatch()
			tn := newTurn()
			ns := uint32(0)
			fill := func() {
				for i := range bt.bufs {
					frame := bt.bufs[i][headroom+tx.Len():]
					frame[12], frame[13] = 0x08, 0x00
					tx.Put(bt.bufs[i][headroom:], encap.SublayerWord(seq, ns))
					ns++
					bt.sizes[i] = tx.Len() + 1400
				}
			}
			b.SetBytes(1400)
			b.ReportAllocs()
			for i := 0; i < b.N; i += batchSize {
				if seq {
					b.StopTimer()
					fill()
					b.StartTimer()
				} else if i == 0 {
					fill()
				}
				m.receive(tn, encap.EncapUDP, t, bt, batchSize)
			}
			if fd.Written() < uint64(b.N) {
				b.Fatal(fd.Written())
			}
		})
	}
}
