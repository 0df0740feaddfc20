package cli

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/l2tpu/l2tpu/dataplane"
	"github.com/l2tpu/l2tpu/encap"
)

// TestStrtoul: C strtoul(s, &end, 0) semantics as get_u32/get_u16 use them.
func TestStrtoul(t *testing.T) {
	for _, tc := range []struct {
		in string
		v  uint64
		ok bool
	}{
		{"0", 0, true}, {"10", 10, true}, {"0x10", 16, true}, {"0X1f", 31, true}, {"010", 8, true},
		{" 7", 7, true}, {"+7", 7, true}, {"-0", 0, true}, {"4294967295", 4294967295, true},
		{"", 0, false}, {"x", 0, false}, {"0x", 0, false}, {"08", 0, false}, {"7 ", 0, false},
		{"-1", 0, false}, {"4294967296", 0, false}, {"99999999999999999999999", 0, false}, {"1e3", 0, false},
	} {
		v, ok := strtoul(tc.in, 0xffffffff)
		if v != tc.v || ok != tc.ok {
			t.Errorf("strtoul(%q) = %d %v, want %d %v", tc.in, v, ok, tc.v, tc.ok)
		}
	}
}

func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" = counts as missing; "!" = error
	}{
		{"192.0.2.1", "192.0.2.1"}, {"10.1", "10.1.0.0"}, {"0xc0.0250.2.1", "192.168.2.1"}, {"7", "7.0.0.0"},
		{"default", "0.0.0.0"}, {"any", ""}, {"all", ""}, {"2001:db8::1", "2001:db8::1"},
		{"::ffff:192.0.2.1", "::ffff:192.0.2.1"}, {"1.2.3.256", "!"}, {"1..2", "!"}, {"a.b.c.d", "!"},
		{"fe80::1%eth0", "!"}, {"2001:db8::g", "!"}, {"1.2.3.4.", "!"}, {"", "!"},
	} {
		a, ok, err := parseAddr(tc.in)
		switch {
		case tc.want == "!":
			if err == nil || err.(*ExitError).Code != ExitAddress {
				t.Errorf("%q: %v %v, want an address error", tc.in, a, err)
			}
		case tc.want == "":
			if err != nil || ok {
				t.Errorf("%q: %v %v %v, want missing", tc.in, a, ok, err)
			}
		default:
			if err != nil || !ok || a != netip.MustParseAddr(tc.want) {
				t.Errorf("%q: %v %v %v, want %s", tc.in, a, ok, err, tc.want)
			}
		}
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse(strings.Fields("add tunnel session tid 1 ptid 2 sid 3 psid 4 local 192.0.2.1 remote 192.0.2.2 udp_sport 1 udp_dport 2"))
	if err != nil {
		t.Fatal(err)
	}
	if c.T.Encap != encap.EncapUDP || c.S.L2Spec != encap.L2SpecDefault || c.S.SendSeq || c.S.RecvSeq ||
		c.T.UDPCsum || c.T.UDP6ZeroCsumTx || c.T.UDP6ZeroCsumRx || c.S.TunnelID != 1 {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestMakeargs(t *testing.T) {
	for in, want := range map[string]string{
		`add tunnel  tid 1`: "add|tunnel|tid|1",
		`name "a b" x`:      "name|a b|x",
		`name 'q"uote' `:    `name|q"uote`,
		"\t lone ":          "lone",
		``:                  "",
		`a""b`:              "ab",
	} {
		if got := strings.Join(SplitLine(in), "|"); got != want {
			t.Errorf("SplitLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParse: any argument list is either a Command or an ExitError with
// ip's exit status; nothing panics, and a Command passes its own checks.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"add tunnel tunnel_id 1 peer_tunnel_id 2 local 192.0.2.1 remote 192.0.2.2 udp_sport 1 udp_dport 2",
		"add session name x tid 1 sid 2 psid 3 cookie 01020304 peer_cookie 0102030405060708 seq both l2spec_type none",
		"del session tid 1 sid 2", "show tunnel", "help", "add tunnel tunnel_id", "add h",
		"add tunnel local 0x1.2.3 remote ::1 encap ip offset 4",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, " ")
		c, err := Parse(args)
		if err != nil {
			e, ok := err.(*ExitError)
			if !ok || (e.Code != ExitUsage && e.Code != ExitAddress) {
				t.Fatalf("%q: %v", s, err)
			}
			return
		}
		if c.check() != nil || (!c.Tunnel && !c.Session) {
			t.Fatalf("%q: accepted an incomplete command", s)
		}
		if c.Verb == Add && c.Session && (c.S.SessionID == 0 || c.S.PeerSessionID == 0) {
			t.Fatalf("%q: session without IDs", s)
		}
	})
}

// FuzzBatch: batch input of any shape runs or stops cleanly.
func FuzzBatch(f *testing.F) {
	f.Add("add tunnel tid 1 \\\n ptid 2 # comment\n\nshow tunnel\n")
	f.Add("'unterminated\n\"x\" y\\")
	f.Fuzz(func(t *testing.T, in string) {
		if !utf8.ValidString(in) {
			return
		}
		var out, errb bytes.Buffer
		r := &Runner{Backend: nopBackend{}, Out: &out, Err: &errb}
		code := r.Batch(strings.NewReader(in), "fuzz", true)
		if code != 0 && code != 1 && code != ExitUsage && code != ExitAddress {
			t.Fatalf("status %d", code)
		}
	})
}

// nopBackend accepts everything and holds nothing.
type nopBackend struct{}

func (nopBackend) AddTunnel(dataplane.TunnelConfig) error   { return nil }
func (nopBackend) AddSession(dataplane.SessionConfig) error { return nil }
func (nopBackend) DeleteTunnel(uint32) error                { return nil }
func (nopBackend) DeleteSession(uint32, uint32) error       { return nil }
func (nopBackend) List() ([]dataplane.TunnelInfo, []dataplane.SessionInfo, error) {
	return nil, nil, nil
}

// TestParseEnums: encap and l2spec_type take their types' text forms, as
// ip does: encap exactly, l2spec_type in any case, neither a prefix; other
// words get ip's messages.
func TestParseEnums(t *testing.T) {
	base := "add tunnel session tid 1 ptid 2 sid 3 psid 4 local 192.0.2.1 remote 192.0.2.2 udp_sport 1 udp_dport 2 "
	for _, tc := range []struct {
		args   string
		encap  encap.Encap
		l2spec encap.L2Spec
		err    string
	}{
		{args: "encap ip", encap: encap.EncapIP, l2spec: encap.L2SpecDefault},
		{args: "encap ip encap udp l2spec_type none", encap: encap.EncapUDP, l2spec: encap.L2SpecNone},
		{args: "l2spec_type NoNe l2spec_type DEFAULT", l2spec: encap.L2SpecDefault},
		{args: "l2spec_type None", l2spec: encap.L2SpecNone},
		{args: "encap UDP", err: "Unknown tunnel encapsulation \"UDP\"\n"},
		{args: "encap u", err: "Unknown tunnel encapsulation \"u\"\n"},
		{args: "encap ''", err: "Unknown tunnel encapsulation \"''\"\n"},
		{args: "l2spec_type def", err: "Unknown layer2specific header type \"def\"\n"},
		{args: "l2spec_type encap(1)", err: "Unknown layer2specific header type \"encap(1)\"\n"},
	} {
		c, err := Parse(strings.Fields(base + tc.args))
		if tc.err != "" {
			if e, ok := err.(*ExitError); !ok || e.Code != ExitUsage || e.Msg != tc.err {
				t.Errorf("%s: %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || c.T.Encap != tc.encap || c.S.L2Spec != tc.l2spec {
			t.Errorf("%s: %v %v %v", tc.args, c.T.Encap, c.S.L2Spec, err)
		}
	}
}
