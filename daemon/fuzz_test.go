package daemon

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzDecodeRequest: any bytes a client sends give a request or an error,
// never a panic; what is accepted has a known operation and what it needs,
// survives validation and re-encodes to a request that decodes the same.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"op":"list"}`))
	f.Add([]byte(`{"op":"add_tunnel","tunnel":{"TunnelID":1,"PeerTunnelID":2,"Encap":1,"Local":"192.0.2.1","Remote":"192.0.2.2"}}`))
	f.Add([]byte(`{"op":"add_session","session":{"TunnelID":1,"SessionID":2,"PeerSessionID":3,"Cookie":"0011223344556677","L2Spec":1,"ReorderTimeout":9223372036854775807}}`))
	f.Add([]byte(`{"op":"del_session","tunnel_id":1,"session_id":2}`))
	f.Add([]byte(`{"op":"x","extra":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeRequest(bytes.NewReader(b))
		if err != nil {
			return
		}
		switch req.Op {
		case OpAddTunnel:
			if req.Tunnel == nil {
				t.Fatal("add_tunnel without a tunnel accepted")
			}
			req.Tunnel.Validate()
		case OpAddSession:
			if req.Session == nil {
				t.Fatal("add_session without a session accepted")
			}
			req.Session.Validate()
		case OpDelTunnel, OpDelSession, OpList:
		default:
			t.Fatalf("operation %q accepted", req.Op)
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		req2, err := DecodeRequest(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("re-encoded request refused: %v\n%s", err, again)
		}
		if again2, _ := json.Marshal(req2); !bytes.Equal(again, again2) {
			t.Fatalf("round trip:\n%s\n%s", again, again2)
		}
	})
}

// FuzzJournal: any state file gives a table or an error that says what to
// do, never a panic; an accepted table rewritten as a snapshot reads back
// the same.
func FuzzJournal(f *testing.F) {
	f.Add([]byte(`{"l2tpu_state":2,"netns_cookie":7}` + "\n" +
		`{"op":"tunnel","tunnel":{"tunnel_id":1,"peer_tunnel_id":2,"encap":"ip","local":"192.0.2.1","remote":"192.0.2.2"}}` + "\n" +
		`{"op":"session","session":{"tunnel_id":1,"session_id":3,"peer_session_id":4,"interface":"pw0","cookie":"01020304","l2spec_type":"default"}}` + "\n" +
		`{"op":"next_ns","next_ns":[{"tunnel_id":1,"session_id":3,"next_ns":5}]}` + "\n" +
		`{"op":"del_tunnel","tunnel_id":1}` + "\n"))
	f.Add([]byte(`{"tunnels":[],"sessions":[{"config":{"TunnelID":1},"interface":"x"}]}`))
	f.Add([]byte(`{"l2tpu_state":2}` + "\n" + `{"op":"rename","tunnel_id":1,"session_id":1,"interface":"y"}` + "\n{\"op"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tb, _, err := parseJournal(b, 7)
		if err != nil {
			return
		}
		for _, r := range tb.tunnels {
			r.config()
		}
		for _, r := range tb.sessions {
			r.config()
			r.restore(true)
		}
		var buf bytes.Buffer
		hb, _ := json.Marshal(header{Version: stateVersion, NetnsCookie: 7})
		buf.Write(append(hb, '\n'))
		for _, r := range tb.records() {
			rb, err := json.Marshal(&r)
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(append(rb, '\n'))
		}
		tb2, note, err := parseJournal(buf.Bytes(), 7)
		if err != nil || note != "" || tb2.size() != tb.size() {
			t.Fatalf("snapshot does not read back: %v %q %d/%d\n%s", err, note, tb2.size(), tb.size(), buf.Bytes())
		}
	})
}
