package daemon

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
)

// journalV2 is a state file as l2tpu wrote it before encap.Encap and
// encap.L2Spec had text forms (version 2): an IP tunnel, a UDP tunnel over
// IPv6, a session with each sublayer.
var journalV2 = []string{
	`{"l2tpu_state":2,"netns_cookie":7}`,
	`{"op":"tunnel","tunnel":{"tunnel_id":1,"peer_tunnel_id":2,"encap":"ip","local":"192.0.2.1","remote":"192.0.2.2"}}`,
	`{"op":"tunnel","tunnel":{"tunnel_id":5,"peer_tunnel_id":6,"encap":"udp","local":"2001:db8::1","remote":"2001:db8::2","udp_sport":1701,"udp_dport":1702,"udp6_zero_csum_tx":true}}`,
	`{"op":"session","session":{"tunnel_id":1,"session_id":3,"peer_session_id":4,"interface":"pw0","ifindex":12,"cookie":"0102030405060708","l2spec_type":"default","send_seq":true}}`,
	`{"op":"session","session":{"tunnel_id":5,"session_id":7,"peer_session_id":8,"name":"pw1","interface":"pw1","l2spec_type":"none","reorder_timeout_ns":100000000}}`,
	`{"op":"next_ns","next_ns":[{"tunnel_id":1,"session_id":3,"next_ns":5}]}`,
}

// TestJournalTextForms: a journal written before the enums had text forms
// loads to the same configuration, and this l2tpu records that
// configuration in the very same words.
func TestJournalTextForms(t *testing.T) {
	tb, note, err := parseJournal([]byte(strings.Join(journalV2, "\n")+"\n"), 7)
	if err != nil || note != "" {
		t.Fatalf("%v %q", err, note)
	}
	tunnels := []dataplane.TunnelConfig{
		testTunnel(),
		{TunnelID: 5, PeerTunnelID: 6, Encap: encap.EncapUDP, Local: mustAddr("2001:db8::1"), Remote: mustAddr("2001:db8::2"),
			UDPSourcePort: 1701, UDPDestPort: 1702, UDP6ZeroCsumTx: true},
	}
	sessions := []struct {
		c      dataplane.SessionConfig
		ifname string
		index  int
	}{
		{testSession(t), "pw0", 12},
		{dataplane.SessionConfig{TunnelID: 5, SessionID: 7, PeerSessionID: 8, Name: "pw1", L2Spec: encap.L2SpecNone, ReorderTimeout: 100 * time.Millisecond}, "pw1", 0},
	}
	for i, want := range tunnels {
		r := tb.tunnels[want.TunnelID]
		if r == nil {
			t.Fatalf("tunnel %d not loaded", want.TunnelID)
		}
		if c, err := r.config(); err != nil || c != want {
			t.Errorf("tunnel %d: %+v %v, want %+v", want.TunnelID, c, err, want)
		}
		if b, _ := json.Marshal(record{Op: recTunnel, Tunnel: tunnelRecordOf(want)}); string(b) != journalV2[1+i] {
			t.Errorf("recorded as\n%s\nnot\n%s", b, journalV2[1+i])
		}
	}
	for i, want := range sessions {
		r := tb.sessions[sessionKey{want.c.TunnelID, want.c.SessionID}]
		if r == nil {
			t.Fatalf("session %d not loaded", want.c.SessionID)
		}
		if c, err := r.config(); err != nil || c != want.c || r.Interface != want.ifname || r.Index != want.index {
			t.Errorf("session %d: %+v %v, want %+v", want.c.SessionID, c, err, want.c)
		}
		if b, _ := json.Marshal(record{Op: recSession, Session: sessionRecordOf(want.c, want.ifname, want.index)}); string(b) != journalV2[3+i] {
			t.Errorf("recorded as\n%s\nnot\n%s", b, journalV2[3+i])
		}
	}
	if !tb.tunnels[1].encapIP() || tb.tunnels[5].encapIP() {
		t.Error("encapIP")
	}
}

// TestJournalUnknownWords: a record whose enum word this l2tpu does not
// know (another release's, a hand edit, case changed) loads; its config
// says what the word may be, so that it stays pending with the reason.
func TestJournalUnknownWords(t *testing.T) {
	j := strings.Join([]string{journalV2[0],
		`{"op":"tunnel","tunnel":{"tunnel_id":9,"peer_tunnel_id":2,"encap":"gre","local":"192.0.2.1","remote":"192.0.2.2"}}`,
		`{"op":"tunnel","tunnel":{"tunnel_id":10,"peer_tunnel_id":2,"encap":"IP","local":"192.0.2.1","remote":"192.0.2.2"}}`,
		`{"op":"session","session":{"tunnel_id":9,"session_id":3,"peer_session_id":4,"interface":"pw0","l2spec_type":"Default"}}`,
	}, "\n") + "\n"
	tb, _, err := parseJournal([]byte(j), 7)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint32{9, 10} {
		r := tb.tunnels[id]
		if _, err := r.config(); !errors.Is(err, encap.ErrBadEncap) || !strings.Contains(err.Error(), "udp or ip") {
			t.Errorf("tunnel %d: %v", id, err)
		}
		if r.encapIP() {
			t.Errorf("tunnel %d is IP", id)
		}
	}
	if _, err := tb.sessions[sessionKey{9, 3}].config(); !errors.Is(err, encap.ErrBadL2Spec) || !strings.Contains(err.Error(), "session 9/3") {
		t.Errorf("session: %v", err)
	}
}
