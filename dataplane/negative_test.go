package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/conn"
	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/internal/fixture"
	"github.com/l2tpu/l2tpu/internal/netns"
	"github.com/l2tpu/l2tpu/internal/privtest"
)

// testFrame is an Ethernet frame of n bytes numbered i.
func testFrame(i, n int) []byte { return fixture.Frame(i, n) }

const etherTest = fixture.EtherType

// rig is one l2tpu session in namespace B facing a hand-made peer socket in
// namespace A that sends whatever the test crafts.
type rig struct {
	e     *env
	m     *Manager
	peer  conn.Conn
	capt  *privtest.Capture // on B's session interface
	ifb   string
	sb    SessionConfig
	wire  encap.Session // what the peer sends (A's view)
	encap encap.Encap
}

func newRig(t *testing.T, enc encap.Encap, mod func(*SessionConfig)) *rig {
	e := newEnv(t)
	r := &rig{e: e, m: newManager(t, e.b), encap: enc}
	_, tb := tunnelPair(enc, false)
	if err := r.m.AddTunnel(tb); err != nil {
		t.Fatal(err)
	}
	_, r.sb = sessionPair(t, combo{encap: enc, cookie: 4, l2spec: encap.L2SpecDefault})
	if mod != nil {
		mod(&r.sb)
	}
	var err error
	if r.ifb, err = r.m.AddSession(r.sb); err != nil {
		t.Fatal(err)
	}
	up(t, e.b, r.ifb, "203.0.113.2/24")
	r.capt = privtest.NewCapture(t, e.b, r.ifb)
	r.wire = encap.Session{Encap: enc, SessionID: r.sb.PeerSessionID, PeerSessionID: r.sb.SessionID,
		Cookie: r.sb.PeerCookie, PeerCookie: r.sb.Cookie, L2Spec: r.sb.L2Spec}
	r.peer = r.dialPeer(t, a4, 1701)
	return r
}

func (r *rig) dialPeer(t *testing.T, local netip.Addr, port uint16) conn.Conn {
	var c conn.Conn
	err := netns.Do(r.e.a.Path(), func() (err error) {
		if r.encap == encap.EncapIP {
			c, err = conn.DialIP(local, b4, conn.IPOptions{})
		} else {
			c, err = conn.DialUDP(netip.AddrPortFrom(local, port), netip.AddrPortFrom(b4, 1702), conn.UDPOptions{})
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// msg is what the peer would send for frame with sublayer word l2ss.
func (r *rig) msg(l2ss uint32, frame []byte) []byte {
	tx := encap.NewTxHeader(&r.wire)
	return tx.Append(nil, l2ss, frame)
}

func (r *rig) send(t *testing.T, c conn.Conn, msgs ...[]byte) {
	t.Helper()
	if n, err := c.WriteBatch(msgs, 0); n != len(msgs) || err != nil {
		t.Fatalf("peer sent %d of %d: %v", n, len(msgs), err)
	}
}

// delivered returns the test frames that reached B's interface: it waits
// for want of them, then sees whether more come.
func (r *rig) delivered(want int) [][]byte {
	return r.capt.CollectN(want, 10*time.Second, 300*time.Millisecond, func(f []byte, out bool) bool {
		return !out && len(f) >= 14 && binary.BigEndian.Uint16(f[12:]) == etherTest
	})
}

func (r *rig) stats(t *testing.T) (Stats, Stats) {
	t.Helper()
	ss := r.m.Sessions()
	if len(ss) != 1 {
		t.Fatalf("%d sessions", len(ss))
	}
	return ss[0].Stats, r.m.Tunnels()[0].Stats
}

func TestReceiveClassificationAndCounters(t *testing.T) {
	r := newRig(t, encap.EncapUDP, nil)
	hdr := r.wire.TxHeaderLen() // 4 + 4 + 4 (cookie) + 4 (sublayer) = 16
	if hdr != 16 {
		t.Fatal(hdr)
	}

	// Five good frames: delivered unchanged, counted with the header.
	var good [][]byte
	for i := 0; i < 5; i++ {
		good = append(good, r.msg(0, testFrame(i, 100)))
	}
	r.send(t, r.peer, good...)
	got := r.delivered(5)
	if len(got) != 5 {
		t.Fatalf("delivered %d of 5", len(got))
	}
	for i, f := range got {
		if !bytes.Equal(f, testFrame(i, 100)) {
			t.Fatalf("frame %d altered: %x", i, f)
		}
	}
	want := Stats{RxPackets: 5, RxBytes: 5 * (16 + 100)}
	if ss, ts := r.stats(t); ss != want || ts != want {
		t.Fatalf("after 5 good frames:\nsession %+v\ntunnel  %+v\nwant    %+v", ss, ts, want)
	}

	// What never reaches a session moves no counter at all.
	wrongSession := r.wire
	wrongSession.PeerSessionID = 999
	ws := encap.NewTxHeader(&wrongSession)
	r.send(t, r.peer,
		ws.Append(nil, 0, testFrame(50, 100)),                            // unknown session
		[]byte{0, 3, 0, 0, 0, 0, 7, 0xd2, 1, 2, 3, 4, 5},                 // 13 bytes: short
		append([]byte{0xc8, 3, 0, 20}, make([]byte, 16)...),              // T bit: control
		append([]byte{0, 2, 0, 0, 0, 0, 7, 0xd2}, testFrame(51, 100)...), // L2TPv2 header
	)
	// Version 1 with our session ID, and a header cut short: rx_invalid.
	bad := r.msg(0, testFrame(52, 100))
	bad[1] = 1
	r.send(t, r.peer, bad, []byte{0, 3, 0, 0, 0, 0, 7, 0xd2, 0xbb, 0xbb, 0xbb, 0xbb, 0, 0})
	// Wrong cookie: rx_cookie_discards and rx_errors.
	wc := r.msg(0, testFrame(53, 100))
	wc[8] ^= 0xff
	r.send(t, r.peer, wc, wc, wc)
	// A frame shorter than an Ethernet header and one beyond MTU+18:
	// counted as received (the kernel counts before l2tp_eth), not delivered.
	mtu := r.m.Sessions()[0].MTU
	r.send(t, r.peer, r.msg(0, testFrame(54, 10)), r.msg(0, testFrame(55, mtu+19)), r.msg(0, testFrame(56, mtu+18)))
	// Garbage of every length from the peer: no crash.
	var junk [][]byte
	for n := 0; n < 64; n++ {
		j := make([]byte, n)
		for k := range j {
			j[k] = byte(n*31 + k*7)
		}
		junk = append(junk, j)
	}
	r.send(t, r.peer, junk...)

	got = r.delivered(1)
	if len(got) != 1 || len(got[0]) != mtu+18 {
		t.Fatalf("delivered %d frames, want only the MTU+18 one", len(got))
	}
	ss, ts := r.stats(t)
	want = Stats{RxPackets: 5 + 3, RxBytes: uint64(5*116 + (16 + 10) + (16 + mtu + 19) + (16 + mtu + 18)),
		RxCookieDiscards: 3, RxErrors: 3}
	if ss != want {
		t.Fatalf("session %+v\nwant    %+v", ss, want)
	}
	if ts != (Stats{RxPackets: want.RxPackets, RxBytes: want.RxBytes, RxInvalid: 2}) {
		t.Fatalf("tunnel %+v", ts)
	}

	// Interface down: dropped (l2tp_eth), still counted as received.
	r.e.b.Run(t, "ip", "link", "set", r.ifb, "down")
	r.send(t, r.peer, r.msg(0, testFrame(60, 100)))
	if got := r.delivered(0); len(got) != 0 {
		t.Fatalf("delivered %d frames to a down interface", len(got))
	}
	privtest.Eventually(t, 3*time.Second, func() error {
		if ss, _ := r.stats(t); ss.RxPackets != want.RxPackets+1 {
			return fmt.Errorf("the frame for the down interface was not counted: %+v", ss)
		}
		return nil
	})
}

func TestOnlyPeerAccepted(t *testing.T) {
	r := newRig(t, encap.EncapUDP, nil)
	r.e.a.Run(t, "ip", "addr", "add", "192.0.2.3/24", "dev", r.e.aIf)
	otherPort := r.dialPeer(t, a4, 1799)
	otherAddr := r.dialPeer(t, netip.MustParseAddr("192.0.2.3"), 1701)
	r.send(t, otherPort, r.msg(0, testFrame(1, 100)))
	r.send(t, otherAddr, r.msg(0, testFrame(2, 100)))
	if got := r.delivered(0); len(got) != 0 {
		t.Fatalf("%d frames from non-peers delivered", len(got))
	}
	if ss, ts := r.stats(t); ss != (Stats{}) || ts != (Stats{}) {
		t.Fatalf("non-peer traffic counted: %+v %+v", ss, ts)
	}
	r.send(t, r.peer, r.msg(0, testFrame(3, 100)))
	if got := r.delivered(1); len(got) != 1 {
		t.Fatal("peer frame not delivered")
	}
}

// TestIPAnySource: with IP encapsulation the kernel looks sessions up by ID
// alone and accepts any source; session 0 is control and ignored.
func TestIPAnySource(t *testing.T) {
	r := newRig(t, encap.EncapIP, nil)
	r.e.a.Run(t, "ip", "addr", "add", "192.0.2.3/24", "dev", r.e.aIf)
	other := r.dialPeer(t, netip.MustParseAddr("192.0.2.3"), 0)
	r.send(t, other, r.msg(0, testFrame(1, 100)))
	r.send(t, r.peer, r.msg(0, testFrame(2, 100)), []byte{0, 0, 0, 0, 0xc8, 3, 0, 12, 0, 0, 0, 1}, []byte{0, 0, 7})
	cut := r.msg(0, testFrame(3, 100))[:10] // session ID + cookie + half a sublayer: discarded
	r.send(t, r.peer, cut)
	if got := r.delivered(2); len(got) != 2 {
		t.Fatalf("delivered %d, want 2", len(got))
	}
	hdr := r.wire.TxHeaderLen() // 4 + 4 + 4 = 12
	want := Stats{RxPackets: 2, RxBytes: 2 * uint64(hdr+100)}
	if ss, ts := r.stats(t); ss != want || ts != want {
		t.Fatalf("session %+v tunnel %+v want %+v", ss, ts, want)
	}
}

// TestTransmit: frames the host sends on the session interface leave with
// the exact header and counters.
func TestTransmit(t *testing.T) {
	r := newRig(t, encap.EncapUDP, nil)
	for i := 0; i < 7; i++ {
		r.capt.Send(t, testFrame(i, 200))
	}
	msgs := readPeer(t, r.peer, 7)
	for i, m := range msgs {
		want := append([]byte{0, 3, 0, 0, 0, 0, 0x03, 0xe9, 0xbb, 0xbb, 0xbb, 0xbb, 0, 0, 0, 0}, testFrame(i, 200)...)
		if !bytes.Equal(m, want) {
			t.Fatalf("message %d:\n%x\nwant\n%x", i, m, want)
		}
	}
	want := Stats{TxPackets: 7, TxBytes: 7 * (16 + 200)}
	if ss, ts := r.stats(t); ss != want || ts != want {
		t.Fatalf("session %+v tunnel %+v want %+v", ss, ts, want)
	}
}

// readPeer reads n test messages (L2TP over UDP) at the hand-made peer.
func readPeer(t *testing.T, c conn.Conn, n int) [][]byte {
	t.Helper()
	bufs := make([][]byte, conn.MaxBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 9600)
	}
	sizes := make([]int, conn.MaxBatch)
	var out [][]byte
	deadline := time.Now().Add(5 * time.Second)
	for len(out) < n && time.Now().Before(deadline) {
		k, err := c.ReadBatch(bufs, sizes, 64)
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for i := 0; i < k; i++ {
			m := bufs[i][64 : 64+sizes[i]]
			// Keep only the test frames (the host also sends ARP etc.).
			if len(m) >= 16+14 && binary.BigEndian.Uint16(m[16+12:]) == etherTest {
				out = append(out, append([]byte(nil), m...))
			}
		}
	}
	if len(out) != n {
		t.Fatalf("peer got %d of %d messages", len(out), n)
	}
	return out
}

func TestSeqRecvAgainstUnsequencedPeer(t *testing.T) {
	r := newRig(t, encap.EncapUDP, func(s *SessionConfig) { s.RecvSeq = true })
	for i := 0; i < 4; i++ {
		r.send(t, r.peer, r.msg(0, testFrame(i, 100)))
	}
	if got := r.delivered(0); len(got) != 0 {
		t.Fatal("unsequenced frames delivered with seq recv")
	}
	if ss, _ := r.stats(t); ss != (Stats{RxSeqDiscards: 4, RxErrors: 4}) {
		t.Fatalf("%+v", ss)
	}
}

// TestLACSendSeq: a session with seq none starts sending sequence numbers
// when the peer does, and stops when the peer stops.
func TestLACSendSeq(t *testing.T) {
	r := newRig(t, encap.EncapUDP, nil)
	r.send(t, r.peer, r.msg(encap.SublayerWord(true, 0), testFrame(0, 100)))
	privtest.Eventually(t, 2*time.Second, func() error {
		if !r.m.Sessions()[0].SendSeq {
			return errors.New("send_seq not turned on")
		}
		return nil
	})
	for i := 0; i < 3; i++ {
		r.capt.Send(t, testFrame(i, 100))
	}
	for i, m := range readPeer(t, r.peer, 3) {
		if w := binary.BigEndian.Uint32(m[12:]); w != encap.SublayerWord(true, uint32(i)) {
			t.Fatalf("message %d sublayer %#x", i, w)
		}
	}
	r.send(t, r.peer, r.msg(0, testFrame(1, 100)))
	privtest.Eventually(t, 2*time.Second, func() error {
		if r.m.Sessions()[0].SendSeq {
			return errors.New("send_seq not turned off")
		}
		return nil
	})
	r.capt.Send(t, testFrame(9, 100))
	if m := readPeer(t, r.peer, 1)[0]; binary.BigEndian.Uint32(m[12:]) != 0 {
		t.Fatalf("still sequenced: %x", m[12:16])
	}
}

func TestReorderTimeout(t *testing.T) {
	r := newRig(t, encap.EncapUDP, func(s *SessionConfig) {
		s.SendSeq, s.RecvSeq, s.ReorderTimeout = true, true, 100*time.Millisecond
	})
	seqMsg := func(ns int) []byte { return r.msg(encap.SublayerWord(true, uint32(ns)), testFrame(ns, 100)) }
	// Swapped pairs are put back in order; each overtaking packet counts.
	r.send(t, r.peer, seqMsg(0), seqMsg(2), seqMsg(1), seqMsg(4), seqMsg(3))
	// 5 is lost: 6 and 7 wait for it, then go out after the timeout.
	r.send(t, r.peer, seqMsg(6), seqMsg(7))
	got := r.delivered(7)
	var order []uint32
	for _, f := range got {
		order = append(order, binary.BigEndian.Uint32(f[14:]))
	}
	if len(order) != 7 || order[0] != 0 || order[1] != 1 || order[2] != 2 || order[3] != 3 || order[4] != 4 || order[5] != 6 || order[6] != 7 {
		t.Fatalf("delivered order %v", order)
	}
	ss, _ := r.stats(t)
	if ss.RxOOSPackets != 2 || ss.RxPackets != 7 || ss.RxErrors != 0 {
		t.Fatalf("%+v", ss)
	}
	// A late 5 is now behind: dropped by the window rule (rx_errors only).
	r.send(t, r.peer, seqMsg(5))
	if got := r.delivered(0); len(got) != 0 {
		t.Fatal("late packet delivered")
	}
	if ss, _ := r.stats(t); ss.RxErrors != 1 || ss.RxSeqDiscards != 0 {
		t.Fatalf("%+v", ss)
	}
}

func TestCreateErrors(t *testing.T) {
	e := newEnv(t)
	m := newManager(t, e.a)
	ta, _ := tunnelPair(encap.EncapUDP, false)
	if err := m.AddTunnel(ta); err != nil {
		t.Fatal(err)
	}
	ipT := TunnelConfig{TunnelID: 300, PeerTunnelID: 300, Encap: encap.EncapIP, Local: a4, Remote: b4}
	if err := m.AddTunnel(ipT); err != nil {
		t.Fatal(err)
	}
	udp2 := ta
	udp2.TunnelID, udp2.UDPSourcePort = 101, 1711
	if err := m.AddTunnel(udp2); err != nil {
		t.Fatal(err)
	}
	ifs := func() string { return e.a.Run(t, "ip", "-o", "link", "show") }
	before := ifs()
	s := SessionConfig{TunnelID: 100, SessionID: 5, PeerSessionID: 6, L2Spec: encap.L2SpecDefault}
	name, err := m.AddSession(s)
	if err != nil || name != "l2tpeth0" {
		t.Fatalf("%q %v", name, err)
	}
	for _, tc := range []struct {
		name  string
		op    func() error
		want  error
		errno syscall.Errno
	}{
		{"duplicate tunnel", func() error { return m.AddTunnel(ta) }, ErrTunnelExists, syscall.EEXIST},
		{"port in use", func() error { x := ta; x.TunnelID = 9; return m.AddTunnel(x) }, nil, syscall.EADDRINUSE},
		{"local not ours", func() error {
			x := ta
			x.TunnelID, x.Local = 9, netip.MustParseAddr("192.0.2.99")
			return m.AddTunnel(x)
		}, nil, syscall.EADDRNOTAVAIL},
		{"no route", func() error {
			x := ta
			x.TunnelID, x.UDPSourcePort, x.Remote = 9, 1799, netip.MustParseAddr("203.0.113.50")
			return m.AddTunnel(x)
		}, nil, syscall.ENETUNREACH},
		{"ip no route", func() error {
			x := ipT
			x.TunnelID, x.Remote = 9, netip.MustParseAddr("2001:db8:77::1")
			x.Local = a6
			return m.AddTunnel(x)
		}, nil, syscall.ENETUNREACH},
		{"mixed families", func() error { x := ta; x.TunnelID, x.Remote = 9, b6; return m.AddTunnel(x) }, ErrInvalid, syscall.EINVAL},
		{"zero tunnel id", func() error { x := ta; x.TunnelID = 0; return m.AddTunnel(x) }, ErrInvalid, syscall.EINVAL},
		{"reorder timeout past ip's range", func() error {
			x := s
			x.SessionID, x.ReorderTimeout = 77, MaxReorderTimeout+time.Millisecond
			_, err := m.AddSession(x)
			return err
		}, ErrInvalid, syscall.EINVAL},
		{"no tunnel", func() error { x := s; x.TunnelID = 77; _, err := m.AddSession(x); return err }, ErrNoTunnel, syscall.ENODEV},
		{"duplicate session", func() error { _, err := m.AddSession(s); return err }, ErrSessionExists, syscall.EEXIST},
		{"same ID in an IP tunnel", func() error { x := s; x.TunnelID = 300; _, err := m.AddSession(x); return err }, ErrSessionExists, syscall.EEXIST},
		{"name exists", func() error { x := s; x.SessionID, x.Name = 50, e.aIf; _, err := m.AddSession(x); return err }, ErrNameExists, syscall.EEXIST},
		{"bad name", func() error { x := s; x.SessionID, x.Name = 51, "a/b"; _, err := m.AddSession(x); return err }, ErrInvalid, syscall.EINVAL},
		{"zero session id", func() error { x := s; x.SessionID = 0; _, err := m.AddSession(x); return err }, ErrInvalid, syscall.EINVAL},
		{"delete missing tunnel", func() error { return m.DeleteTunnel(77) }, ErrNoTunnel, syscall.ENODEV},
		{"delete missing session", func() error { return m.DeleteSession(100, 77) }, ErrNoSession, syscall.ENODEV},
	} {
		err := tc.op()
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !errors.Is(err, tc.errno) || Errno(err) != tc.errno {
			t.Errorf("%s: %v; want %v (%v)", tc.name, err, tc.want, tc.errno)
		}
	}
	// Nothing half-created by the failures: one new interface, four...
	after := ifs()
	if n := countLines(after) - countLines(before); n != 1 {
		t.Fatalf("%d new interfaces:\n%s", n, after)
	}
	if len(m.Tunnels()) != 3 || len(m.Sessions()) != 1 {
		t.Fatalf("%d tunnels, %d sessions", len(m.Tunnels()), len(m.Sessions()))
	}
	// The same session ID in another UDP tunnel is allowed.
	x := s
	x.TunnelID = 101
	if n, err := m.AddSession(x); err != nil || n != "l2tpeth1" {
		t.Fatalf("UDP duplicate across tunnels: %q %v", n, err)
	}
	// Lowest free index; a named one; MTU from the path (1500 - 54).
	if err := m.DeleteSession(100, 5); err != nil {
		t.Fatal(err)
	}
	x.TunnelID, x.SessionID = 100, 8
	if n, _ := m.AddSession(x); n != "l2tpeth0" {
		t.Fatalf("reused index: %q", n)
	}
	x.SessionID, x.Name = 9, "pw-test"
	if n, _ := m.AddSession(x); n != "pw-test" {
		t.Fatalf("named: %q", n)
	}
	if out := e.a.Run(t, "ip", "-o", "link", "show", "pw-test"); !bytes.Contains([]byte(out), []byte("mtu 1446")) {
		t.Fatalf("MTU: %s", out)
	}
	// Deleting a tunnel deletes its sessions and their interfaces.
	if err := m.DeleteTunnel(100); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.Try("ip", "link", "show", "pw-test"); err == nil {
		t.Fatal("pw-test survived its tunnel")
	}
	if len(m.Sessions()) != 1 {
		t.Fatalf("%d sessions left", len(m.Sessions()))
	}
	// The deleted tunnel's port is free again.
	if err := m.AddTunnel(ta); err != nil {
		t.Fatal(err)
	}
}

func countLines(s string) int { return bytes.Count([]byte(s), []byte("\n")) }

// TestRestoreReattaches: a manager that stops without removing its
// persistent interfaces (a crash) leaves them; a new manager restoring the
// session re-attaches, keeping MTU and addresses, and traffic flows again.
func TestRestoreReattaches(t *testing.T) {
	e := newEnv(t)
	ma := newManager(t, e.a)
	mb1, err := New(Options{NetNS: e.b.Path(), PersistTAP: true})
	if err != nil {
		t.Fatal(err)
	}
	ta, tb := tunnelPair(encap.EncapUDP, false)
	sa, sb := sessionPair(t, combo{encap: encap.EncapUDP, cookie: 8, l2spec: encap.L2SpecDefault})
	if err := ma.AddTunnel(ta); err != nil {
		t.Fatal(err)
	}
	ifa, _ := ma.AddSession(sa)
	if err := mb1.AddTunnel(tb); err != nil {
		t.Fatal(err)
	}
	ifb, err := mb1.AddSession(sb)
	if err != nil {
		t.Fatal(err)
	}
	up(t, e.a, ifa, "203.0.113.1/24")
	up(t, e.b, ifb, "203.0.113.2/24")
	e.b.Run(t, "ip", "link", "set", ifb, "mtu", "1400")
	if err := ping(e.a, "203.0.113.2", 2, 1); err != nil {
		t.Fatal(err)
	}
	mb1.Close(false) // as if the process died: interfaces stay
	if out := e.b.Run(t, "ip", "-o", "addr", "show", ifb); !bytes.Contains([]byte(out), []byte("203.0.113.2/24")) {
		t.Fatalf("address gone with the process: %s", out)
	}
	mb2 := newManager(t, e.b)
	if err := mb2.AddTunnel(tb); err != nil {
		t.Fatal(err)
	}
	name, err := mb2.RestoreSession(sb, Restore{Interface: ifb})
	if err != nil || name != ifb {
		t.Fatalf("restore: %q %v", name, err)
	}
	if s := mb2.Sessions()[0]; s.MTU != 1400 {
		t.Fatalf("MTU %d after re-attach, want the administrator's 1400", s.MTU)
	}
	if err := ping(e.a, "203.0.113.2", 3, 2); err != nil {
		t.Fatal(err)
	}
}
