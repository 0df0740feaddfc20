package daemon

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
)

func testSession(t *testing.T) dataplane.SessionConfig {
	return dataplane.SessionConfig{TunnelID: 1, SessionID: 3, PeerSessionID: 4, Cookie: encap.MustParseCookie("0102030405060708"), L2Spec: encap.L2SpecDefault, SendSeq: true}
}

func testTunnel() dataplane.TunnelConfig {
	return dataplane.TunnelConfig{TunnelID: 1, PeerTunnelID: 2, Encap: encap.EncapIP,
		Local: mustAddr("192.0.2.1"), Remote: mustAddr("192.0.2.2")}
}

// TestJournalRoundTrip: what is appended is what a new process reads back,
// through compaction and reopening; deletions and renames replay.
func TestJournalRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "run", "s.state")
	j, err := openJournal(p, 7, newTable())
	if err != nil {
		t.Fatal(err)
	}
	sc := testSession(t)
	for _, r := range []record{
		{Op: recTunnel, Tunnel: tunnelRecordOf(testTunnel())},
		{Op: recSession, Session: sessionRecordOf(sc, "pw0", 0)},
		{Op: recSession, Session: sessionRecordOf(dataplane.SessionConfig{TunnelID: 1, SessionID: 5, PeerSessionID: 6, L2Spec: encap.L2SpecNone}, "pw1", 0)},
		{Op: recRename, TunnelID: 1, SessionID: 3, Interface: "renamed0"},
		{Op: recNextNS, NextNS: []nextNSRecord{{TunnelID: 1, SessionID: 3, NextNS: 77}}},
		{Op: recDelSession, TunnelID: 1, SessionID: 5},
	} {
		if err := j.append(r); err != nil {
			t.Fatal(err)
		}
	}
	j.close()
	tb, note, err := loadJournal(p, 7)
	if err != nil || note != "" {
		t.Fatal(err, note)
	}
	if len(tb.tunnels) != 1 || len(tb.sessions) != 1 {
		t.Fatalf("%+v", tb)
	}
	x := tb.sessions[sessionKey{1, 3}]
	c, err := x.config()
	if err != nil || c != sc || x.Interface != "renamed0" || x.NextNS != 77 || x.Exact {
		t.Fatalf("%+v %+v %v", x, c, err)
	}
	if tc, err := tb.tunnels[1].config(); err != nil || tc != testTunnel() {
		t.Fatalf("%+v %v", tc, err)
	}
	// Another namespace's journal is refused; the positive control above
	// read it with its own cookie.
	if _, _, err := loadJournal(p, 8); err == nil || !strings.Contains(err.Error(), "another network namespace") {
		t.Fatalf("foreign journal: %v", err)
	}
	// Deleting the tunnel deletes its sessions.
	j, err = openJournal(p, 7, tb)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.append(record{Op: recDelTunnel, TunnelID: 1}); err != nil {
		t.Fatal(err)
	}
	j.close()
	if tb, _, err = loadJournal(p, 7); err != nil || tb.size() != 0 {
		t.Fatalf("%v %+v", err, tb)
	}
}

// TestJournalTornTail: a last line cut short by a crash was never
// acknowledged and is ignored; damage before it is an error.
func TestJournalTornTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.state")
	j, err := openJournal(p, 0, newTable())
	if err != nil {
		t.Fatal(err)
	}
	j.append(record{Op: recTunnel, Tunnel: tunnelRecordOf(testTunnel())})
	j.close()
	good, _ := os.ReadFile(p)
	os.WriteFile(p, append(append([]byte{}, good...), `{"op":"session","sess`...), 0o600)
	tb, note, err := loadJournal(p, 0)
	if err != nil || note == "" || tb.size() != 1 {
		t.Fatalf("torn tail: %v %q %d", err, note, tb.size())
	}
	// A last line ending in a newline but unreadable (a block of zeros, a
	// record's tail) was cut short too.
	os.WriteFile(p, append(append([]byte{}, good...), "\x00\x00\x00sion\":3}}\n"...), 0o600)
	if tb, note, err := loadJournal(p, 0); err != nil || note == "" || tb.size() != 1 {
		t.Fatalf("unreadable last line: %v %q", err, note)
	}
	// Damage before the last line is not a crash's: the file is refused.
	lines := strings.SplitAfter(string(good), "\n")
	damaged := lines[0] + "{garbage\n" + strings.Join(lines[1:], "")
	os.WriteFile(p, []byte(damaged), 0o600)
	if _, _, err := loadJournal(p, 0); err == nil || !strings.Contains(err.Error(), "move it away") {
		t.Fatalf("damaged line: %v", err)
	}
	os.WriteFile(p, []byte(`{"l2tpu_state":99}`+"\n"), 0o600)
	if _, _, err := loadJournal(p, 0); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("newer version: %v", err)
	}
	if tb, _, err := loadJournal(filepath.Join(t.TempDir(), "none"), 0); err != nil || tb.size() != 0 {
		t.Fatalf("missing file: %v", err)
	}
}

// TestJournalReadsVersion1: the single-document file of earlier releases
// is read.
func TestJournalReadsVersion1(t *testing.T) {
	p := filepath.Join(t.TempDir(), "old.json")
	old := `{
  "tunnels": [{"TunnelID":1,"PeerTunnelID":2,"Encap":1,"Local":"192.0.2.1","Remote":"192.0.2.2","UDPSourcePort":0,"UDPDestPort":0,"UDPCsum":false,"UDP6ZeroCsumTx":false,"UDP6ZeroCsumRx":false}],
  "sessions": [{"config":{"TunnelID":1,"SessionID":3,"PeerSessionID":4,"Name":"","Cookie":"0102030405060708","PeerCookie":"","L2Spec":1,"SendSeq":true,"RecvSeq":false,"ReorderTimeout":0},"interface":"pw0","next_ns":77}]
}
`
	os.WriteFile(p, []byte(old), 0o600)
	tb, _, err := loadJournal(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	x := tb.sessions[sessionKey{1, 3}]
	if x == nil || x.Interface != "pw0" || x.NextNS != 77 {
		t.Fatalf("%+v", tb)
	}
	if c, err := x.config(); err != nil || c != testSession(t) {
		t.Fatalf("%+v %v", c, err)
	}
	if c, err := tb.tunnels[1].config(); err != nil || c != testTunnel() {
		t.Fatalf("%+v %v", c, err)
	}
}

// TestJournalCompacts: the file stays proportional to what it describes,
// however many changes it has seen.
func TestJournalCompacts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.state")
	j, err := openJournal(p, 0, newTable())
	if err != nil {
		t.Fatal(err)
	}
	j.append(record{Op: recTunnel, Tunnel: tunnelRecordOf(testTunnel())})
	for i := range 10000 {
		s := dataplane.SessionConfig{TunnelID: 1, SessionID: 10, PeerSessionID: uint32(i + 1), L2Spec: encap.L2SpecDefault}
		if err := j.append(record{Op: recSession, Session: sessionRecordOf(s, "pw", 0)}); err != nil {
			t.Fatal(err)
		}
		j.append(record{Op: recDelSession, TunnelID: 1, SessionID: 10})
	}
	j.close()
	if j.size > 2*j.snapshot+1<<20+4096 {
		t.Fatalf("%d bytes from a snapshot of %d", j.size, j.snapshot)
	}
	tb, _, err := loadJournal(p, 0)
	if err != nil || tb.size() != 1 {
		t.Fatalf("%v %d", err, tb.size())
	}
}

func TestRestoreMargin(t *testing.T) {
	crash := sessionRecord{Interface: "x", NextNS: 100}
	if r := crash.restore(true); r.NextNS != 100+NSMargin || r.Interface != "x" {
		t.Fatalf("%+v", r)
	}
	clean := sessionRecord{NextNS: 100, Exact: true}
	if r := clean.restore(true); r.NextNS != 100 {
		t.Fatalf("%+v", r)
	}
	// The margin must stay inside the peer's window so that it resyncs.
	if NSMargin >= encap.SeqWindow {
		t.Fatal("margin outside the window")
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestPendingConflict: a session not restored yet keeps its IDs, under the
// kernel's rules: unique in its tunnel, and in the namespace where an
// IP-encapsulated tunnel is involved.
func TestPendingConflict(t *testing.T) {
	tb := newTable()
	udp, ip := testTunnel(), testTunnel()
	udp.TunnelID, udp.Encap = 1, encap.EncapUDP
	udp.UDPSourcePort, udp.UDPDestPort = 1, 1
	ip.TunnelID = 2
	tb.tunnels[1], tb.tunnels[2] = tunnelRecordOf(udp), tunnelRecordOf(ip)
	tb.tunnels[3] = tunnelRecordOf(udp)
	tb.tunnels[3].TunnelID = 3
	s := &Server{j: &journal{t: tb}, pendingS: map[sessionKey]string{{1, 10}: "busy", {2, 20}: "busy"}}
	for _, c := range []struct {
		tid, sid uint32
		conflict bool
	}{
		{1, 10, true},  // same IDs
		{3, 10, false}, // the same session ID in another UDP tunnel: allowed
		{1, 11, false},
		{1, 20, true}, // the pending one is in an IP tunnel
		{2, 10, true}, // the new one is in an IP tunnel
		{2, 21, false},
	} {
		if _, got := s.pendingConflict(c.tid, c.sid); got != c.conflict {
			t.Errorf("session %d in tunnel %d: conflict %v, want %v", c.sid, c.tid, got, c.conflict)
		}
	}
}

// TestJournalConcurrentAppends: requests, checkpoints and interface events
// append from different goroutines; every record lands whole.
func TestJournalConcurrentAppends(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.state")
	j, err := openJournal(p, 0, newTable())
	if err != nil {
		t.Fatal(err)
	}
	j.append(record{Op: recTunnel, Tunnel: tunnelRecordOf(testTunnel())})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				sid := uint32(g*100 + i + 1)
				s := dataplane.SessionConfig{TunnelID: 1, SessionID: sid, PeerSessionID: sid, L2Spec: encap.L2SpecDefault}
				if err := j.append(record{Op: recSession, Session: sessionRecordOf(s, "pw", 0)}); err != nil {
					t.Error(err)
				}
				j.session(sessionKey{1, sid})
			}
		}()
	}
	wg.Wait()
	j.close()
	tb, note, err := loadJournal(p, 0)
	if err != nil || note != "" || len(tb.sessions) != 200 {
		t.Fatalf("%v %q %d sessions", err, note, len(tb.sessions))
	}
}

// A journal of an earlier boot is restored only where it is of the initial
// network namespace and the caller is in it: namespace cookies restart at
// boot, so for any other namespace nothing says it is the same one.
func TestJournalOfEarlierBoot(t *testing.T) {
	tunnel := `{"op":"tunnel","tunnel":{"tunnel_id":1,"peer_tunnel_id":2,"encap":"ip","local":"192.0.2.1","remote":"198.51.100.1"}}` + "\n"
	journal := func(boot string, initial bool) []byte {
		h, _ := json.Marshal(header{Version: stateVersion, NetnsCookie: 7, BootID: boot, InitialNetns: initial})
		return append(append(h, '\n'), tunnel...)
	}
	// Control: this boot's is restored.
	if tb, _, err := parseJournal(journal(bootID(), false), 7); err != nil || len(tb.tunnels) != 1 {
		t.Fatalf("this boot's: %v", err)
	}
	if _, _, err := parseJournal(journal("0f0f0f0f-earlier-boot", false), 7); !errors.Is(err, ErrEarlierBoot) {
		t.Fatalf("an earlier boot's, not the initial namespace's: %v", err)
	}
	tb, _, err := parseJournal(journal("0f0f0f0f-earlier-boot", true), 7)
	switch {
	case initialNetns() && (err != nil || len(tb.tunnels) != 1):
		t.Fatalf("an earlier boot's of the initial namespace, read in it: %v", err)
	case !initialNetns() && !errors.Is(err, ErrEarlierBoot):
		t.Fatalf("an earlier boot's of the initial namespace, read elsewhere: %v", err)
	}
}
