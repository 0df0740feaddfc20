package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/conn"
	"github.com/l2tpu/l2tpu/conn/conntest"
	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/internal/fixture"
	"github.com/l2tpu/l2tpu/internal/privtest"
	"github.com/l2tpu/l2tpu/tap"
	"github.com/l2tpu/l2tpu/tap/taptest"
)

// The tests here run without root: the data path's own logic
// (classification, counters, sequencing, restore, link events, carrier,
// fairness) on in-memory TAPs and sockets (tap/taptest, conn/conntest).
// The real-device tests of the same logic are in negative_test.go,
// durability_test.go and pseudowire_test.go.

const recvWait = 5 * time.Second

// fakePair is two Managers, A and B, with one session each facing the
// other (tunnelPair and sessionPair).
type fakePair struct {
	a, b       *fakeSide
	devA, devB *taptest.Device
	sa, sb     SessionConfig
}

func newFakePair(t *testing.T, c combo, o Options) *fakePair {
	t.Helper()
	n := conntest.NewNet()
	p := &fakePair{a: newFakeSide(t, n, o, a4, a6), b: newFakeSide(t, n, o, b4, b6)}
	ta, tb := tunnelPair(c.encap, c.v6)
	p.sa, p.sb = sessionPair(t, c)
	if err := p.a.m.AddTunnel(ta); err != nil {
		t.Fatal(err)
	}
	if err := p.b.m.AddTunnel(tb); err != nil {
		t.Fatal(err)
	}
	ifa, err := p.a.m.AddSession(p.sa)
	if err != nil {
		t.Fatal(err)
	}
	ifb, err := p.b.m.AddSession(p.sb)
	if err != nil {
		t.Fatal(err)
	}
	p.devA, p.devB = p.a.dev(t, ifa), p.b.dev(t, ifb)
	return p
}

// recvN takes n frames from d, failing on a timeout.
func recvN(t *testing.T, d *taptest.Device, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for len(out) < n {
		f, ok := d.Recv(recvWait)
		if !ok {
			t.Fatalf("%s: %d of %d frames delivered", d.Name(), len(out), n)
		}
		out = append(out, f)
	}
	return out
}

// noMore fails if d is given a frame within a short while.
func noMore(t *testing.T, d *taptest.Device) {
	t.Helper()
	if f, ok := d.Recv(100 * time.Millisecond); ok {
		t.Fatalf("%s: unexpected frame %x", d.Name(), f[:min(len(f), 32)])
	}
}

// TestFakePseudowire: every encapsulation, family, cookie length, sublayer
// and sequencing carries frames both ways unchanged, and both ends count
// what the kernel counts (bytes: the L2TP header and the frame).
func TestFakePseudowire(t *testing.T) {
	for _, e := range []encap.Encap{encap.EncapUDP, encap.EncapIP} {
		for _, v6 := range []bool{false, true} {
			for _, cookie := range []int{0, 4, 8} {
				for _, l2 := range []encap.L2Spec{encap.L2SpecNone, encap.L2SpecDefault} {
					for _, seq := range []bool{false, true} {
						c := combo{encap: e, v6: v6, cookie: cookie, l2spec: l2, seqBoth: seq}
						t.Run(c.String(), func(t *testing.T) {
							p := newFakePair(t, c, Options{})
							const n, size = 20, 200
							for i := range n {
								p.devA.Send(fixture.Frame(i, size))
								p.devB.Send(fixture.Frame(1000+i, size))
							}
							w := p.sa.wire(e)
							per := uint64(w.TxHeaderLen() + size)
							if seq && l2 == encap.L2SpecNone {
								// Sequence numbers need the sublayer: the
								// kernel sends none and drops every message.
								want := Stats{TxPackets: n, TxBytes: n * per, RxSeqDiscards: n, RxErrors: n}
								for _, m := range []*Manager{p.a.m, p.b.m} {
									eventually(t, func() error {
										if s := m.Sessions()[0].Stats; s != want {
											return fmt.Errorf("session %+v\nwant %+v", s, want)
										}
										return nil
									})
								}
								noMore(t, p.devA)
								noMore(t, p.devB)
								return
							}
							for i, f := range recvN(t, p.devB, n) {
								if !bytes.Equal(f, fixture.Frame(i, size)) {
									t.Fatalf("A to B frame %d: %x", i, f[:18])
								}
							}
							for i, f := range recvN(t, p.devA, n) {
								if !bytes.Equal(f, fixture.Frame(1000+i, size)) {
									t.Fatalf("B to A frame %d: %x", i, f[:18])
								}
							}
							want := Stats{TxPackets: n, TxBytes: n * per, RxPackets: n, RxBytes: n * per}
							for _, m := range []*Manager{p.a.m, p.b.m} {
								eventually(t, func() error {
									if s, tn := m.Sessions()[0].Stats, m.Tunnels()[0].Stats; s != want || tn != want {
										return fmt.Errorf("session %+v\ntunnel %+v\nwant %+v", s, tn, want)
									}
									return nil
								})
							}
						})
					}
				}
			}
		}
	}
}

// eventually retries f for a few seconds.
func eventually(t *testing.T, f func() error) { t.Helper(); privtest.Eventually(t, recvWait, f) }

// fakeRig is one session in B and a peer socket the test writes with, as
// newRig's, in memory.
type fakeRig struct {
	b    *fakeSide
	dev  *taptest.Device
	peer *conntest.Conn
	wire encap.Session // what the peer sends
	sb   SessionConfig
}

func newFakeRig(t *testing.T, mod func(*SessionConfig)) *fakeRig {
	t.Helper()
	n := conntest.NewNet()
	r := &fakeRig{b: newFakeSide(t, n, Options{}, b4)}
	_, tb := tunnelPair(encap.EncapUDP, false)
	if err := r.b.m.AddTunnel(tb); err != nil {
		t.Fatal(err)
	}
	_, r.sb = sessionPair(t, combo{encap: encap.EncapUDP, cookie: 4, l2spec: encap.L2SpecDefault})
	if mod != nil {
		mod(&r.sb)
	}
	name, err := r.b.m.AddSession(r.sb)
	if err != nil {
		t.Fatal(err)
	}
	r.dev = r.b.dev(t, name)
	r.wire = encap.Session{Encap: encap.EncapUDP, SessionID: r.sb.PeerSessionID, PeerSessionID: r.sb.SessionID,
		Cookie: r.sb.PeerCookie, PeerCookie: r.sb.Cookie, L2Spec: r.sb.L2Spec}
	if r.peer, err = n.Host(a4).Peer(netip.AddrPortFrom(a4, 1701), netip.AddrPortFrom(b4, 1702)); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *fakeRig) msg(l2ss uint32, frame []byte) []byte {
	tx := encap.NewTxHeader(&r.wire)
	return tx.Append(nil, l2ss, frame)
}

func (r *fakeRig) send(t *testing.T, msgs ...[]byte) {
	t.Helper()
	if n, err := r.peer.WriteBatch(msgs, 0); n != len(msgs) || err != nil {
		t.Fatalf("peer sent %d of %d: %v", n, len(msgs), err)
	}
}

func (r *fakeRig) stats() (Stats, Stats) {
	return r.b.m.Sessions()[0].Stats, r.b.m.Tunnels()[0].Stats
}

// TestFakeReceiveRules is TestReceiveClassificationAndCounters without
// root: what is delivered, what is dropped, and which counter says so.
func TestFakeReceiveRules(t *testing.T) {
	r := newFakeRig(t, nil)
	var good [][]byte
	for i := range 5 {
		good = append(good, r.msg(0, fixture.Frame(i, 100)))
	}
	r.send(t, good...)
	for i, f := range recvN(t, r.dev, 5) {
		if !bytes.Equal(f, fixture.Frame(i, 100)) {
			t.Fatalf("frame %d altered", i)
		}
	}
	want := Stats{RxPackets: 5, RxBytes: 5 * (16 + 100)}
	eventually(t, func() error {
		if ss, ts := r.stats(); ss != want || ts != want {
			return fmt.Errorf("session %+v tunnel %+v, want %+v", ss, ts, want)
		}
		return nil
	})
	// Never a session's: no counter.
	other := r.wire
	other.PeerSessionID = 999
	ws := encap.NewTxHeader(&other)
	r.send(t,
		ws.Append(nil, 0, fixture.Frame(50, 100)),
		[]byte{0, 3, 0, 0, 0, 0, 7, 0xd2, 1, 2, 3, 4, 5},
		append([]byte{0xc8, 3, 0, 20}, make([]byte, 16)...),
		append([]byte{0, 2, 0, 0, 0, 0, 7, 0xd2}, fixture.Frame(51, 100)...),
	)
	// Version 1, and a header cut short: the tunnel's rx_invalid.
	bad := r.msg(0, fixture.Frame(52, 100))
	bad[1] = 1
	r.send(t, bad, []byte{0, 3, 0, 0, 0, 0, 7, 0xd2, 0xbb, 0xbb, 0xbb, 0xbb, 0, 0})
	// Wrong cookie: rx_cookie_discards and rx_errors.
	wc := r.msg(0, fixture.Frame(53, 100))
	wc[8] ^= 0xff
	r.send(t, wc, wc, wc)
	// Beyond MTU+18: counted as received, not delivered; MTU+18 is.
	mtu := r.b.m.Sessions()[0].MTU
	r.send(t, r.msg(0, fixture.Frame(55, mtu+19)), r.msg(0, fixture.Frame(56, mtu+18)))
	got := recvN(t, r.dev, 1)
	if len(got[0]) != mtu+18 {
		t.Fatalf("delivered a %d-byte frame, want the MTU+18 one", len(got[0]))
	}
	noMore(t, r.dev)
	want = Stats{RxPackets: 5 + 2, RxBytes: uint64(5*116 + (16 + mtu + 19) + (16 + mtu + 18)), RxCookieDiscards: 3, RxErrors: 3}
	ss, ts := r.stats()
	if ss != want {
		t.Fatalf("session %+v\nwant    %+v", ss, want)
	}
	if ts != (Stats{RxPackets: want.RxPackets, RxBytes: want.RxBytes, RxInvalid: 2}) {
		t.Fatalf("tunnel %+v", ts)
	}
	// The interface's MTU followed (a link event): 1000 bounds frames now.
	if err := r.b.links.SetLinkMTU(r.dev.Name(), 1000); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		r.send(t, r.msg(0, fixture.Frame(57, 1019)))
		if f, ok := r.dev.Recv(20 * time.Millisecond); ok {
			return fmt.Errorf("a %d-byte frame delivered beyond MTU 1000", len(f))
		}
		return nil
	})
	r.send(t, r.msg(0, fixture.Frame(58, 1018)))
	recvN(t, r.dev, 1)
}

// TestFakeClassification: a session ID is the tunnel's in UDP (two tunnels
// may each have session 5) and the namespace's in IP, whatever the source
// (the kernel's l2tp_ip looks sessions up by ID alone).
func TestFakeClassification(t *testing.T) {
	n := conntest.NewNet()
	b := newFakeSide(t, n, Options{}, b4)
	c3 := netip.MustParseAddr("192.0.2.3")
	for i, peer := range []netip.Addr{a4, c3} {
		tc := TunnelConfig{TunnelID: uint32(10 + i), PeerTunnelID: 1, Encap: encap.EncapUDP, Local: b4, Remote: peer, UDPSourcePort: uint16(1710 + i), UDPDestPort: 1701}
		if err := b.m.AddTunnel(tc); err != nil {
			t.Fatal(err)
		}
		if _, err := b.m.AddSession(SessionConfig{TunnelID: tc.TunnelID, SessionID: 5, PeerSessionID: 5, Name: fmt.Sprintf("u%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	w := encap.Session{Encap: encap.EncapUDP, SessionID: 5, PeerSessionID: 5}
	tx := encap.NewTxHeader(&w)
	for i, peer := range []netip.Addr{a4, c3} {
		pc, err := n.Host(peer).Peer(netip.AddrPortFrom(peer, 1701), netip.AddrPortFrom(b4, uint16(1710+i)))
		if err != nil {
			t.Fatal(err)
		}
		pc.WriteBatch([][]byte{tx.Append(nil, 0, fixture.Frame(i, 100))}, 0)
	}
	for i := range 2 {
		d := b.dev(t, fmt.Sprintf("u%d", i))
		if f := recvN(t, d, 1)[0]; fixture.Number(f) != uint32(i) {
			t.Fatalf("u%d got frame %d", i, fixture.Number(f))
		}
		noMore(t, d)
	}
	// IP: session 7 of tunnel 20; a message for it from any source is its.
	ti := TunnelConfig{TunnelID: 20, PeerTunnelID: 2, Encap: encap.EncapIP, Local: b4, Remote: a4}
	if err := b.m.AddTunnel(ti); err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.AddSession(SessionConfig{TunnelID: 20, SessionID: 7, PeerSessionID: 7, Name: "ip0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.AddSession(SessionConfig{TunnelID: 10, SessionID: 7, PeerSessionID: 7}); !errors.Is(err, ErrSessionExists) {
		t.Fatalf("session 7 again beside an IP tunnel's: %v", err)
	}
	wi := encap.Session{Encap: encap.EncapIP, SessionID: 7, PeerSessionID: 7}
	txi := encap.NewTxHeader(&wi)
	from := n.Host(c3) // not the tunnel's remote
	pc, err := from.DialIP(c3, b4, conn.IPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pc.WriteBatch([][]byte{txi.Append(nil, 0, fixture.Frame(77, 100))}, 0)
	if f := recvN(t, b.dev(t, "ip0"), 1)[0]; fixture.Number(f) != 77 {
		t.Fatalf("ip0 got %d", fixture.Number(f))
	}
}

// TestFakeSequencing: seq recv drops unsequenced messages; with a reorder
// timeout swapped messages are put back in order and a gap waits out the
// timeout; a late message is dropped by the window rule.
func TestFakeSequencing(t *testing.T) {
	r := newFakeRig(t, func(s *SessionConfig) { s.RecvSeq = true })
	for i := range 4 {
		r.send(t, r.msg(0, fixture.Frame(i, 100)))
	}
	noMore(t, r.dev)
	eventually(t, func() error {
		if ss, _ := r.stats(); ss != (Stats{RxSeqDiscards: 4, RxErrors: 4}) {
			return fmt.Errorf("%+v", ss)
		}
		return nil
	})

	r = newFakeRig(t, func(s *SessionConfig) { s.SendSeq, s.RecvSeq, s.ReorderTimeout = true, true, 100*time.Millisecond })
	seq := func(ns int) []byte { return r.msg(encap.SublayerWord(true, uint32(ns)), fixture.Frame(ns, 100)) }
	r.send(t, seq(0), seq(2), seq(1), seq(4), seq(3))
	r.send(t, seq(6), seq(7))
	var order []uint32
	for _, f := range recvN(t, r.dev, 7) {
		order = append(order, fixture.Number(f))
	}
	if fmt.Sprint(order) != "[0 1 2 3 4 6 7]" {
		t.Fatalf("delivered order %v", order)
	}
	if ss, _ := r.stats(); ss.RxOOSPackets != 2 || ss.RxPackets != 7 || ss.RxErrors != 0 {
		t.Fatalf("%+v", ss)
	}
	r.send(t, seq(5))
	noMore(t, r.dev)
	eventually(t, func() error {
		if ss, _ := r.stats(); ss.RxErrors != 1 || ss.RxSeqDiscards != 0 {
			return fmt.Errorf("%+v", ss)
		}
		return nil
	})
	// What B sends is numbered from 0.
	r.dev.Send(fixture.Frame(0, 100), fixture.Frame(1, 100))
	for i := range 2 {
		m, ok := r.peer.Recv(recvWait)
		if !ok {
			t.Fatal("nothing sent")
		}
		if w := binary.BigEndian.Uint32(m[12:]); w != encap.SublayerWord(true, uint32(i)) {
			t.Fatalf("message %d sublayer %#x", i, w)
		}
	}
}

// recorder keeps the changes a Manager records.
type recorder struct {
	mu      sync.Mutex
	changes []Change
}

func (r *recorder) Record(c Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
	return nil
}

func (r *recorder) ops() []ChangeOp {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ChangeOp
	for _, c := range r.changes {
		out = append(out, c.Op)
	}
	return out
}

// TestFakeRestore: a persistent session interface outlives its Manager and
// the next one attaches to it, under its name or, renamed meanwhile, by
// its index, keeping the administrator's MTU and resuming the sequence
// numbers it is told; a deleted one is gone unless recreated.
func TestFakeRestore(t *testing.T) {
	n := conntest.NewNet()
	links := taptest.NewNet(b4)
	host := n.Host(b4)
	start := func() *Manager {
		m, err := New(Options{PersistTAP: true, Host: Host{OpenTAP: links.Open, DialUDP: host.DialUDP, DialIP: host.DialIP, ListenIP: host.ListenIP, Links: links}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	_, tb := tunnelPair(encap.EncapUDP, false)
	_, sb := sessionPair(t, combo{encap: encap.EncapUDP, l2spec: encap.L2SpecDefault, seqBoth: true})
	m1 := start()
	if err := m1.AddTunnel(tb); err != nil {
		t.Fatal(err)
	}
	name, err := m1.AddSession(sb)
	if err != nil {
		t.Fatal(err)
	}
	dev := links.Device(name)
	index, _ := dev.Index()
	if !dev.Persistent() {
		t.Fatal("not made persistent")
	}
	links.SetLinkMTU(name, 1400)
	m1.Close(false) // as if the process died
	if links.Device(name) == nil {
		t.Fatal("the interface went with the process")
	}
	links.Rename(name, "renamed0")

	peer, err := n.Host(a4).Peer(netip.AddrPortFrom(a4, 1701), netip.AddrPortFrom(b4, 1702))
	if err != nil {
		t.Fatal(err)
	}
	m2 := start()
	t.Cleanup(func() { m2.Close(true) })
	if err := m2.AddTunnel(tb); err != nil {
		t.Fatal(err)
	}
	got, err := m2.RestoreSession(sb, Restore{Interface: name, Index: index, NextNS: 100})
	if err != nil || got != "renamed0" {
		t.Fatalf("restore: %q %v", got, err)
	}
	s := m2.Sessions()[0]
	if s.MTU != 1400 {
		t.Fatalf("MTU %d after re-attach, want the administrator's 1400", s.MTU)
	}
	links.Device("renamed0").Send(fixture.Frame(0, 100))
	msg, ok := peer.Recv(recvWait)
	if !ok {
		t.Fatal("nothing sent after the restore")
	}
	if w := binary.BigEndian.Uint32(msg[8:]); w != encap.SublayerWord(true, 100) {
		t.Fatalf("sublayer %#x, want ns 100", w)
	}

	// Deleted while no process held it: gone, unless recreated.
	m2.Close(false)
	links.Delete("renamed0")
	m3 := start()
	t.Cleanup(func() { m3.Close(true) })
	if err := m3.AddTunnel(tb); err != nil {
		t.Fatal(err)
	}
	if _, err := m3.RestoreSession(sb, Restore{Interface: "renamed0", Index: index}); !errors.Is(err, ErrInterfaceGone) {
		t.Fatalf("restore of a deleted interface: %v", err)
	}
	if got, err := m3.RestoreSession(sb, Restore{Interface: "renamed0", Index: index, Recreate: true}); err != nil || got != "renamed0" {
		t.Fatalf("recreate: %q %v", got, err)
	}

	// Another user's TAP under the recorded name is not attached to.
	qs, err := links.Open(tap.Config{Name: "other0", Owner: &tap.Owner{UID: 4242}})
	if err != nil {
		t.Fatal(err)
	}
	qs[0].SetPersist(true)
	qs[0].Close()
	m4, err := New(Options{PersistTAP: true, Owner: &tap.Owner{UID: 0}, Host: Host{OpenTAP: links.Open, DialUDP: host.DialUDP, DialIP: host.DialIP, ListenIP: host.ListenIP, Links: links}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m4.Close(true) })
	m3.Close(true)
	if err := m4.AddTunnel(tb); err != nil {
		t.Fatal(err)
	}
	if _, err := m4.RestoreSession(sb, Restore{Interface: "other0"}); !errors.Is(err, ErrInterfaceGone) {
		t.Fatalf("restore onto another owner's TAP: %v", err)
	}
}

// TestFakeLinkEvents: an interface renamed or deleted behind the Manager's
// back is followed and recorded, as the kernel's l2tp_eth follows it.
func TestFakeLinkEvents(t *testing.T) {
	rec := &recorder{}
	p := newFakePair(t, combo{encap: encap.EncapUDP, l2spec: encap.L2SpecDefault}, Options{Recorder: rec})
	old := p.devB.Name()
	if err := p.b.links.Rename(old, "pw-renamed"); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		if got := p.b.m.Sessions()[0].Interface; got != "pw-renamed" {
			return fmt.Errorf("show says %q", got)
		}
		return nil
	})
	if err := p.b.links.Delete("pw-renamed"); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		if n := len(p.b.m.Sessions()); n != 0 {
			return fmt.Errorf("%d sessions after the interface was deleted", n)
		}
		return nil
	})
	if got := fmt.Sprint(rec.ops()); got != fmt.Sprint([]ChangeOp{TunnelAdded, TunnelAdded, SessionAdded, SessionAdded, SessionRenamed, SessionDeleted}) {
		t.Fatalf("recorded %v", got)
	}
}

// TestFakeCarrier: a session's carrier is off while its tunnel's local
// address is gone, on when it is back; a session added meanwhile starts
// with it off (attaching a queue turns it on: the fake does as the kernel).
func TestFakeCarrier(t *testing.T) {
	p := newFakePair(t, combo{encap: encap.EncapUDP, l2spec: encap.L2SpecDefault}, Options{})
	if err := p.b.m.RefreshCarrier(); err != nil || !p.devB.Carrier() {
		t.Fatalf("carrier off with the local address there: %v", err)
	}
	p.b.links.SetAddrs(b6)
	if err := p.b.m.RefreshCarrier(); err != nil || p.devB.Carrier() {
		t.Fatalf("carrier on without the local address: %v", err)
	}
	name, err := p.b.m.AddSession(SessionConfig{TunnelID: 200, SessionID: 3, PeerSessionID: 3})
	if err != nil {
		t.Fatal(err)
	}
	if p.b.dev(t, name).Carrier() {
		t.Fatal("a session added while the address is gone has carrier")
	}
	p.b.links.SetAddrs(b4, b6)
	if err := p.b.m.RefreshCarrier(); err != nil || !p.devB.Carrier() || !p.b.dev(t, name).Carrier() {
		t.Fatalf("carrier off with the local address back: %v", err)
	}
}

// lostEvents are links whose monitor reports nothing (events lost: the
// Manager resyncs) and whose interface is renamed between Info and State,
// as a rename racing a resync.
type lostEvents struct {
	*taptest.Net
	mu       sync.Mutex
	from, to string
}

func (l *lostEvents) Monitor() (tap.LinkMonitor, error) { return silent{make(chan struct{})}, nil }

func (l *lostEvents) Info(index int) (tap.TunInfo, error) {
	info, err := l.Net.Info(index)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.from != "" && info.Name == l.from {
		l.Net.Rename(l.from, l.to)
		l.from = ""
	}
	return info, err
}

type silent struct{ done chan struct{} }

func (s silent) Run(func(tap.LinkEvent), func()) error { <-s.done; return nil }
func (s silent) Close() error                          { close(s.done); return nil }

// TestFakeResyncRename: an interface renamed while the Manager re-reads it
// after lost events is renamed, not deleted (a read of its MTU by the old
// name fails with ENODEV), and a deleted one is deleted.
func TestFakeResyncRename(t *testing.T) {
	n := conntest.NewNet()
	links := &lostEvents{Net: taptest.NewNet(b4)}
	host := n.Host(b4)
	rec := &recorder{}
	m, err := New(Options{Recorder: rec, Host: Host{OpenTAP: links.Open, DialUDP: host.DialUDP, DialIP: host.DialIP, ListenIP: host.ListenIP, Links: links}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(true) })
	_, tb := tunnelPair(encap.EncapUDP, false)
	if err := m.AddTunnel(tb); err != nil {
		t.Fatal(err)
	}
	name, err := m.AddSession(SessionConfig{TunnelID: 200, SessionID: 1, PeerSessionID: 1, Name: "race0"})
	if err != nil {
		t.Fatal(err)
	}
	links.mu.Lock()
	links.from, links.to = name, "race1"
	links.mu.Unlock()
	m.resyncLinks() // read race0's index, then its MTU after the rename
	if ss := m.Sessions(); len(ss) != 1 {
		t.Fatalf("a rename during resync deleted the session: %+v", ss)
	}
	m.resyncLinks() // what the rename's own event (here lost too) brings
	if ss := m.Sessions(); len(ss) != 1 || ss[0].Interface != "race1" {
		t.Fatalf("after a rename during resync: %+v", ss)
	}
	if links.Device("race1") == nil {
		t.Fatal("the renamed interface is gone")
	}
	links.Delete("race1") // the positive control: a deletion is one
	m.resyncLinks()
	if ss := m.Sessions(); len(ss) != 0 {
		t.Fatalf("after a deletion: %+v", ss)
	}
	if got := fmt.Sprint(rec.ops()); got != fmt.Sprint([]ChangeOp{TunnelAdded, SessionAdded, SessionRenamed, SessionDeleted}) {
		t.Fatalf("recorded %v", got)
	}
}

// TestFakeFairness: a session with a backlog of frames does not hold back
// a quiet one's frame: every ready source gets one batch a round, so the
// quiet frame is sent within a round or two of arriving, not after the
// backlog.
func TestFakeFairness(t *testing.T) {
	n := conntest.NewNet()
	a := newFakeSide(t, n, Options{}, a4)
	ta, _ := tunnelPair(encap.EncapUDP, false)
	if err := a.m.AddTunnel(ta); err != nil {
		t.Fatal(err)
	}
	peer, err := n.Host(b4).Peer(netip.AddrPortFrom(b4, 1702), netip.AddrPortFrom(a4, 1701))
	if err != nil {
		t.Fatal(err)
	}
	var devs []*taptest.Device
	for i := range 2 {
		name, err := a.m.AddSession(SessionConfig{TunnelID: 100, SessionID: uint32(1 + i), PeerSessionID: uint32(1 + i), Name: fmt.Sprintf("fair%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, a.dev(t, name))
	}
	const backlog = 120 * batchSize
	flood := make([][]byte, backlog)
	for i := range flood {
		flood[i] = fixture.Frame(i, 100)
	}
	devs[0].Send(flood...)
	sentBefore := peer.Received() // of the flood, before the quiet frame came
	devs[1].Send(fixture.Frame(9999, 100))
	pos := -1
	for i := 0; i < backlog+1; i++ {
		m, ok := peer.Recv(recvWait)
		if !ok {
			t.Fatalf("%d of %d messages arrived", i, backlog+1)
		}
		if binary.BigEndian.Uint32(m[4:]) == 2 { // the quiet session's ID
			pos = i
			break
		}
	}
	// The quiet frame may wait for the batch being sent and one more.
	if after := pos - int(sentBefore); pos < 0 || after > 3*batchSize {
		t.Fatalf("the quiet session's frame was message %d, %d after it came, behind a backlog of %d", pos, after, backlog)
	}
}
