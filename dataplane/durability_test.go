package dataplane

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/internal/netns"
	"github.com/l2tpu/l2tpu/internal/privtest"
	"github.com/l2tpu/l2tpu/tap"
)

// fakeRecorder records changes, or fails with err.
var _ Recorder = (*fakeRecorder)(nil)

type fakeRecorder struct {
	mu      sync.Mutex
	err     error
	changes []Change
}

func (r *fakeRecorder) Record(c Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.changes = append(r.changes, c)
	return nil
}

func (r *fakeRecorder) set(err error) { r.mu.Lock(); r.err = err; r.mu.Unlock() }

func (r *fakeRecorder) last() Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.changes) == 0 {
		return Change{}
	}
	return r.changes[len(r.changes)-1]
}

func persistentManager(t *testing.T, ns *privtest.NS, rec Recorder) *Manager {
	t.Helper()
	m, err := New(Options{NetNS: ns.Path(), PersistTAP: true, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(true) })
	return m
}

// tunFlags reads an interface's TUN flags from sysfs (IFF_PERSIST 0x800).
func persistent(t *testing.T, ns *privtest.NS, ifname string) bool {
	t.Helper()
	out := strings.TrimSpace(ns.Run(t, "cat", "/sys/class/net/"+ifname+"/tun_flags"))
	var v int
	fmt.Sscanf(out, "0x%x", &v)
	return v&0x800 != 0
}

// TestRecorderFailure: a change that cannot be recorded is undone (an
// addition) or not made (a deletion), and fails with the recorder's error;
// recorded ones leave persistent interfaces.
func TestRecorderFailure(t *testing.T) {
	e := newEnv(t)
	rec := &fakeRecorder{}
	m := persistentManager(t, e.a, rec)
	ta, _ := tunnelPair(encap.EncapUDP, false)
	sa, _ := sessionPair(t, combo{encap: encap.EncapUDP, l2spec: encap.L2SpecDefault})

	rec.set(syscall.ENOSPC)
	if err := m.AddTunnel(ta); !errors.Is(err, syscall.ENOSPC) || len(m.Tunnels()) != 0 {
		t.Fatalf("add tunnel: %v, %d tunnels", err, len(m.Tunnels()))
	}
	rec.set(nil)
	if err := m.AddTunnel(ta); err != nil {
		t.Fatalf("the socket of the undone tunnel stayed bound: %v", err)
	}
	if c := rec.last(); c.Op != TunnelAdded || c.Tunnel != ta {
		t.Fatalf("recorded %+v", c)
	}
	sa.Name = "rec0"
	rec.set(syscall.ENOSPC)
	if _, err := m.AddSession(sa); !errors.Is(err, syscall.ENOSPC) || len(m.Sessions()) != 0 {
		t.Fatalf("add session: %v", err)
	}
	if _, err := e.a.Try("ip", "link", "show", "rec0"); err == nil {
		t.Fatal("the undone session's interface stayed")
	}
	rec.set(nil)
	if _, err := m.AddSession(sa); err != nil {
		t.Fatal(err)
	}
	if c := rec.last(); c.Op != SessionAdded || c.Session != sa || c.Interface != "rec0" {
		t.Fatalf("recorded %+v", c)
	}
	if !persistent(t, e.a, "rec0") {
		t.Fatal("a recorded session's interface is not persistent")
	}
	rec.set(syscall.ENOSPC)
	for _, del := range []func() error{
		func() error { return m.DeleteSession(sa.TunnelID, sa.SessionID) },
		func() error { return m.DeleteTunnel(ta.TunnelID) },
	} {
		if err := del(); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("delete: %v", err)
		}
		if len(m.Sessions()) != 1 || !persistent(t, e.a, "rec0") {
			t.Fatal("a refused delete changed the session or its interface")
		}
	}
	rec.set(nil)
	if err := m.DeleteTunnel(ta.TunnelID); err != nil {
		t.Fatal(err)
	}
	if c := rec.last(); c.Op != TunnelDeleted || c.TunnelID != ta.TunnelID {
		t.Fatalf("recorded %+v", c)
	}
	if _, err := e.a.Try("ip", "link", "show", "rec0"); err == nil {
		t.Fatal("a deleted session's interface stayed")
	}
}

// TestInterfaceDeletedOrRenamed: as with the kernel's l2tp_eth, deleting a
// session's interface deletes the session; a rename is what show reports.
// Both are recorded.
func TestInterfaceDeletedOrRenamed(t *testing.T) {
	e := newEnv(t)
	rec := &fakeRecorder{}
	m := persistentManager(t, e.a, rec)
	ta, _ := tunnelPair(encap.EncapUDP, false)
	if err := m.AddTunnel(ta); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint32{1, 2} {
		if _, err := m.AddSession(SessionConfig{TunnelID: ta.TunnelID, SessionID: id, PeerSessionID: id, Name: fmt.Sprintf("ev%d", id)}); err != nil {
			t.Fatal(err)
		}
	}
	e.a.Run(t, "ip", "link", "set", "ev1", "name", "renamed1")
	privtest.Eventually(t, 3*time.Second, func() error {
		for _, s := range m.Sessions() {
			if s.Config.SessionID == 1 && s.Interface == "renamed1" {
				return nil
			}
		}
		return fmt.Errorf("show does not follow the rename: %+v", m.Sessions())
	})
	if c := rec.last(); c.Op != SessionRenamed || c.SessionID != 1 || c.Interface != "renamed1" {
		t.Fatalf("recorded %+v", c)
	}
	e.a.Run(t, "ip", "link", "del", "ev2")
	privtest.Eventually(t, 3*time.Second, func() error {
		if ss := m.Sessions(); len(ss) != 1 || ss[0].Config.SessionID != 1 {
			return fmt.Errorf("session 2 outlived its interface: %+v", ss)
		}
		return nil
	})
	if c := rec.last(); c.Op != SessionDeleted || c.SessionID != 2 {
		t.Fatalf("recorded %+v", c)
	}
	// The session ID and name are free again; the renamed one still works.
	if _, err := m.AddSession(SessionConfig{TunnelID: ta.TunnelID, SessionID: 2, PeerSessionID: 2, Name: "ev2"}); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteSession(ta.TunnelID, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.Try("ip", "link", "show", "renamed1"); err == nil {
		t.Fatal("the renamed interface stayed after its session was deleted")
	}
}

// TestJumboFrames: every session MTU the path allows carries frames of
// that size, with each fast path on and off: a 9500-byte underlay at the
// default session MTU, a 9000-byte session over a 1500-byte underlay
// (fragmented outer packets), and the largest underlay a veth has.
func TestJumboFrames(t *testing.T) {
	for _, u := range []struct {
		name      string
		underlay  int
		session   int // 0: the default
		pingBytes int
	}{
		{"underlay9500", 9500, 0, 9400},
		{"session9000-underlay1500", 1500, 9000, 8900},
		{"underlay65535", 65535, 0, 65000},
	} {
		for _, fp := range []struct {
			name string
			o    Options
		}{
			{"default", Options{}},
			{"no-gso", Options{Tuning: Tuning{NoGSO: true}}},
			{"no-gro", Options{Tuning: Tuning{NoGRO: true}}},
			{"no-tso", Options{Tuning: Tuning{NoTSO: true}}},
			{"no-tap-gro", Options{Tuning: Tuning{NoTAPGRO: true}}},
		} {
			t.Run(u.name+"/"+fp.name, func(t *testing.T) {
				e := newEnv(t)
				e.a.Run(t, "ip", "link", "set", e.aIf, "mtu", fmt.Sprint(u.underlay))
				e.b.Run(t, "ip", "link", "set", e.bIf, "mtu", fmt.Sprint(u.underlay))
				var ms [2]*Manager
				for i, ns := range []*privtest.NS{e.a, e.b} {
					o := fp.o
					o.NetNS = ns.Path()
					m, err := New(o)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { m.Close(true) })
					ms[i] = m
				}
				c := combo{encap: encap.EncapUDP, l2spec: encap.L2SpecDefault, cookie: 4}
				ifa, ifb := addPair(t, ms[0], ms[1], c)
				for _, x := range []struct {
					ns *privtest.NS
					i  string
				}{{e.a, ifa}, {e.b, ifb}} {
					if u.session != 0 {
						x.ns.Run(t, "ip", "link", "set", x.i, "mtu", fmt.Sprint(u.session))
					}
				}
				mtu := ms[0].Sessions()[0].MTU
				if u.session == 0 && mtu < u.pingBytes+28 {
					t.Fatalf("default MTU %d over a %d underlay", mtu, u.underlay)
				}
				up(t, e.a, ifa, "203.0.113.1/24")
				up(t, e.b, ifb, "203.0.113.2/24")
				for _, dir := range []struct {
					from *privtest.NS
					to   string
				}{{e.a, "203.0.113.2"}, {e.b, "203.0.113.1"}} {
					out, err := dir.from.Try("ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-M", "do", "-s", fmt.Sprint(u.pingBytes), dir.to)
					if err != nil {
						t.Fatalf("ping -s %d to %s: %v\n%s\nsessions: %+v", u.pingBytes, dir.to, err, out, ms[0].Sessions()[0].Stats)
					}
				}
			})
		}
	}
}

// TestUnderlayMTUDrop: the underlay's MTU falls below what the session was
// created for. Outer packets are then fragmented, as the kernel's are, and
// UDP GSO runs sized for the old path must not fail batch after batch:
// traffic flows with few transmit errors.
func TestUnderlayMTUDrop(t *testing.T) {
	e := newEnv(t)
	ma, mb := newManager(t, e.a), newManager(t, e.b)
	c := combo{encap: encap.EncapUDP, l2spec: encap.L2SpecDefault}
	ifa, ifb := addPair(t, ma, mb, c)
	up(t, e.a, ifa, "203.0.113.1/24")
	up(t, e.b, ifb, "203.0.113.2/24")
	tcpTransfer(t, e.a, e.b, "203.0.113.2:5001", 1<<20)
	e.a.Run(t, "ip", "link", "set", e.aIf, "mtu", "1300")
	e.b.Run(t, "ip", "link", "set", e.bIf, "mtu", "1300")
	tcpTransfer(t, e.a, e.b, "203.0.113.2:5002", 4<<20)
	tcpTransfer(t, e.b, e.a, "203.0.113.1:5003", 1<<20)
	for _, m := range []*Manager{ma, mb} {
		if st := m.Sessions()[0].Stats; st.TxErrors > 2 {
			t.Fatalf("%d transmit errors after the MTU drop: %+v", st.TxErrors, st)
		}
	}
}

// TestUnderlayFaults: the pseudowire survives, without a restart, the
// underlay link going down and up, the local address removed and added
// again, and ICMP errors from a peer that went away and came back.
func TestUnderlayFaults(t *testing.T) {
	e := newEnv(t)
	ma, mb := newManager(t, e.a), newManager(t, e.b)
	c := combo{encap: encap.EncapUDP, l2spec: encap.L2SpecDefault, cookie: 4}
	ifa, ifb := addPair(t, ma, mb, c)
	up(t, e.a, ifa, "203.0.113.1/24")
	up(t, e.b, ifb, "203.0.113.2/24")
	works := func(what string) {
		t.Helper()
		privtest.Eventually(t, 10*time.Second, func() error {
			if err := ping(e.a, "203.0.113.2", 2, 1); err != nil {
				return fmt.Errorf("%s: %v", what, err)
			}
			return nil
		})
	}
	works("at first")

	e.a.Run(t, "ip", "link", "set", e.aIf, "down")
	if err := ping(e.a, "203.0.113.2", 2, 1); err == nil {
		t.Fatal("traffic with the underlay down")
	}
	e.a.Run(t, "ip", "link", "set", e.aIf, "up")
	works("after link down and up")

	e.a.Run(t, "ip", "addr", "del", "192.0.2.1/24", "dev", e.aIf)
	if err := ping(e.a, "203.0.113.2", 2, 1); err == nil {
		t.Fatal("traffic without the local address")
	}
	e.a.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", e.aIf)
	works("after the local address came back")

	// B's tunnel goes: A's packets draw ICMP port unreachable, which the
	// connected socket reports as errors; then B comes back.
	_, tb := tunnelPair(c.encap, c.v6)
	if err := mb.DeleteTunnel(tb.TunnelID); err != nil {
		t.Fatal(err)
	}
	ping(e.a, "203.0.113.2", 3, 0)
	if err := mb.AddTunnel(tb); err != nil {
		t.Fatal(err)
	}
	_, sb := sessionPair(t, c)
	ifb, err := mb.AddSession(sb)
	if err != nil {
		t.Fatal(err)
	}
	up(t, e.b, ifb, "203.0.113.2/24")
	// The new interface has a new MAC: A must forget the old one.
	e.a.Run(t, "ip", "neigh", "flush", "dev", ifa)
	works("after ICMP errors")
	if st := ma.Tunnels()[0].Stats; st.TxErrors == 0 {
		t.Logf("no transmit error seen while the peer was away: %+v", st)
	}
}

// TestRestoreTarget: a restored session re-attaches only to its own
// interface: one of the Manager's owner, with no queue attached, found by
// name or (renamed meanwhile) by index. An interface that is gone, or whose
// name another device or session has now, means the session was deleted
// (ErrInterfaceGone), unless the record is of an earlier boot (Recreate);
// one another process holds is busy.
func TestRestoreTarget(t *testing.T) {
	e := newEnv(t)
	own := &tap.Owner{UID: 0, GID: -1}
	m1, err := New(Options{NetNS: e.a.Path(), PersistTAP: true, Owner: own})
	if err != nil {
		t.Fatal(err)
	}
	ta, _ := tunnelPair(encap.EncapUDP, false)
	if err := m1.AddTunnel(ta); err != nil {
		t.Fatal(err)
	}
	cfg := func(id uint32, name string) SessionConfig {
		return SessionConfig{TunnelID: ta.TunnelID, SessionID: id, PeerSessionID: id, Name: name}
	}
	idx := map[string]int{}
	for i, n := range []string{"rt1", "rt2", "rt3", "rt4"} {
		if _, err := m1.AddSession(cfg(uint32(i+1), n)); err != nil {
			t.Fatal(err)
		}
		idx[n] = indexOf(t, e.a, n)
	}
	m1.Close(false)                                          // as if the process died: interfaces stay
	e.a.Run(t, "ip", "link", "del", "rt2")                   // deleted behind its back
	e.a.Run(t, "ip", "link", "set", "rt3", "name", "rt3new") // renamed
	e.a.Run(t, "ip", "link", "del", "rt4")
	e.a.Run(t, "ip", "link", "add", "rt4", "type", "veth", "peer", "name", "rt4p") // its name is another's
	m2, err := New(Options{NetNS: e.a.Path(), PersistTAP: true, Owner: own})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2.Close(true) })
	if err := m2.AddTunnel(ta); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		r    Restore
		want error
		got  string
	}{
		{"rt1", Restore{Interface: "rt1", Index: idx["rt1"]}, nil, "rt1"},
		{"rt2", Restore{Interface: "rt2", Index: idx["rt2"]}, ErrInterfaceGone, ""},
		{"rt3", Restore{Interface: "rt3", Index: idx["rt3"]}, nil, "rt3new"},
		{"rt4", Restore{Interface: "rt4", Index: idx["rt4"]}, ErrInterfaceGone, ""},
	} {
		id := uint32(c.name[2] - '0')
		name, err := m2.RestoreSession(cfg(id, ""), c.r)
		if !errors.Is(err, c.want) || name != c.got {
			t.Errorf("%s: %q %v; want %q %v", c.name, name, err, c.got, c.want)
		}
	}
	// The same session restored twice: its interface is held (by m2).
	if _, err := m2.RestoreSession(cfg(9, ""), Restore{Interface: "rt1"}); !errors.Is(err, ErrInterfaceGone) {
		t.Errorf("another session's interface: %v", err)
	}
	// A record of an earlier boot makes a missing interface anew.
	if name, err := m2.RestoreSession(cfg(2, ""), Restore{Interface: "rt2", Recreate: true}); err != nil || name != "rt2" {
		t.Errorf("recreate: %q %v", name, err)
	}
	// Held by another process: busy, and retried later.
	e.a.Run(t, "ip", "tuntap", "add", "mode", "tap", "name", "rt5")
	var other tap.Device
	if err := netns.Do(e.a.Path(), func() (err error) {
		other, err = tap.Open(tap.Config{Name: "rt5", Attach: true, Persist: true, Backend: tap.Unix})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer other.Remove()
	if _, err := m2.RestoreSession(cfg(5, ""), Restore{Interface: "rt5"}); !errors.Is(err, ErrInterfaceBusy) {
		t.Errorf("held by another process: %v", err)
	}
}

func indexOf(t *testing.T, ns *privtest.NS, name string) int {
	t.Helper()
	var idx int
	if err := netns.Do(ns.Path(), func() (err error) { idx, err = tap.InterfaceIndex(name); return err }); err != nil {
		t.Fatal(err)
	}
	return idx
}
