package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
)

func TestStateRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "run", "s.json")
	ck, _ := encap.ParseCookie("0102030405060708")
	in := state{
		Tunnels: []dataplane.TunnelConfig{{TunnelID: 1, PeerTunnelID: 2, Encap: encap.EncapIP}},
		Sessions: []savedSession{{Config: dataplane.SessionConfig{TunnelID: 1, SessionID: 3, PeerSessionID: 4,
			Cookie: ck, L2Spec: encap.L2SpecDefault, SendSeq: true}, Interface: "pw0", NextNS: 77}},
	}
	if err := save(p, in); err != nil {
		t.Fatal(err)
	}
	out, err := load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Sessions) != 1 || out.Sessions[0].Config != in.Sessions[0].Config || out.Sessions[0].NextNS != 77 || out.Tunnels[0] != in.Tunnels[0] {
		t.Fatalf("%+v", out)
	}
	if st, err := load(filepath.Join(t.TempDir(), "none.json")); err != nil || len(st.Tunnels) != 0 {
		t.Fatalf("missing file: %v %+v", err, st)
	}
	os.WriteFile(p, []byte("{garbage"), 0o600)
	if _, err := load(p); err == nil || !strings.Contains(err.Error(), "move it away") {
		t.Fatalf("damaged file: %v", err)
	}
}

func TestRestoreMargin(t *testing.T) {
	crash := savedSession{Interface: "x", NextNS: 100}
	if r := crash.restore(); r.NextNS != 100+NSMargin || r.Interface != "x" {
		t.Fatalf("%+v", r)
	}
	clean := savedSession{NextNS: 100, Exact: true}
	if r := clean.restore(); r.NextNS != 100 {
		t.Fatalf("%+v", r)
	}
	// The margin must stay inside the peer's window so that it resyncs.
	if NSMargin >= encap.SeqWindow {
		t.Fatal("margin outside the window")
	}
}

func TestAllowed(t *testing.T) {
	s := &Server{gid: -1}
	if !s.allowed(&unix.Ucred{Uid: 0}) || s.allowed(&unix.Ucred{Uid: 1000, Gid: 1000, Pid: int32(os.Getpid())}) {
		t.Fatal("root only without a group")
	}
	s.gid = 4242
	if !s.allowed(&unix.Ucred{Uid: 1000, Gid: 4242}) {
		t.Fatal("primary group refused")
	}
	// Supplementary groups come from /proc/PID/status.
	mine, _ := os.Getgroups()
	if len(mine) > 0 {
		s.gid = mine[0]
		if !s.allowed(&unix.Ucred{Uid: 1000, Gid: 99999, Pid: int32(os.Getpid())}) && mine[0] != 0 {
			t.Fatal("supplementary group refused")
		}
	}
}
