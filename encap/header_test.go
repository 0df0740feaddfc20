package encap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestParseCookie(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		err  error
	}{
		{"01020304", "01020304", nil},
		{"0102030405060708", "0102030405060708", nil},
		{"A1B2C3D4", "a1b2c3d4", nil},
		{"", "", ErrCookieLen},
		{"0102", "", ErrCookieLen},
		{"010203040", "", ErrCookieLen},
		{"0102030405060708aa", "", ErrCookieLen},
		{"0102030g", "", ErrCookieHex},
		{"01020304050607 8", "", ErrCookieHex},
	} {
		c, err := ParseCookie(tc.in)
		if !errors.Is(err, tc.err) {
			t.Errorf("ParseCookie(%q) error %v, want %v", tc.in, err, tc.err)
			continue
		}
		if err == nil && c.String() != tc.want {
			t.Errorf("ParseCookie(%q) = %s, want %s", tc.in, c, tc.want)
		}
	}
	if _, err := NewCookie(make([]byte, 5)); !errors.Is(err, ErrCookieLen) {
		t.Errorf("NewCookie(5 bytes) = %v", err)
	}
	if c, _ := NewCookie(nil); !c.IsZero() || c.Len() != 0 {
		t.Error("empty cookie is not zero")
	}
}

func TestValidate(t *testing.T) {
	ok := Session{SessionID: 1, PeerSessionID: 2}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mod  func(*Session)
		want error
	}{
		{func(s *Session) { s.SessionID = 0 }, ErrSessionID},
		{func(s *Session) { s.PeerSessionID = 0 }, ErrSessionID},
		{func(s *Session) { s.Encap = 7 }, ErrBadEncap},
		{func(s *Session) { s.L2Spec = 2 }, ErrBadL2Spec},
		{func(s *Session) { s.Cookie.n = 3 }, ErrCookieLen},
	} {
		s := ok
		tc.mod(&s)
		if err := s.Validate(); !errors.Is(err, tc.want) {
			t.Errorf("Validate() = %v, want %v", err, tc.want)
		}
	}
}

// TestMTUTable is the kernel's table (reference §2.10) for a 1500-byte path.
func TestMTUTable(t *testing.T) {
	for _, tc := range []struct {
		e      Encap
		v6     bool
		cookie string
		l2     L2Spec
		want   int
	}{
		{EncapUDP, false, "", L2SpecNone, 1450},
		{EncapUDP, false, "", L2SpecDefault, 1446},
		{EncapUDP, false, "01020304", L2SpecDefault, 1442},
		{EncapUDP, false, "0102030405060708", L2SpecDefault, 1438},
		{EncapIP, false, "", L2SpecNone, 1462},
		{EncapIP, false, "", L2SpecDefault, 1458},
		{EncapIP, false, "01020304", L2SpecDefault, 1454},
		{EncapIP, false, "0102030405060708", L2SpecDefault, 1450},
		{EncapUDP, true, "", L2SpecNone, 1430},
		{EncapUDP, true, "", L2SpecDefault, 1426},
		{EncapUDP, true, "01020304", L2SpecDefault, 1422},
		{EncapUDP, true, "0102030405060708", L2SpecDefault, 1418},
		{EncapIP, true, "", L2SpecNone, 1442},
		{EncapIP, true, "", L2SpecDefault, 1438},
		{EncapIP, true, "01020304", L2SpecDefault, 1434},
		{EncapIP, true, "0102030405060708", L2SpecDefault, 1430},
		// kpeer README: ip/v6, 8-byte cookie, no sublayer.
		{EncapIP, true, "0102030405060708", L2SpecNone, 1434},
	} {
		s := Session{Encap: tc.e, L2Spec: tc.l2, SessionID: 1, PeerSessionID: 1}
		if tc.cookie != "" {
			s.Cookie = MustParseCookie(tc.cookie)
		}
		if got := s.DefaultMTU(1500, tc.v6); got != tc.want {
			t.Errorf("%v v6=%v cookie=%q %v: MTU %d, want %d", tc.e, tc.v6, tc.cookie, tc.l2, got, tc.want)
		}
	}
	s := Session{Encap: EncapUDP, L2Spec: L2SpecDefault}
	for _, tc := range []struct{ path, want int }{
		{9000, 9000 - 54}, // jumbo underlay
		{1400, 1400 - 54},
		{0, 1446},     // no cached route: 1500 - overhead
		{40, 1446},    // underflow: fallback
		{68, 1446},    // a route without its address: 14 left, below ETH_MIN_MTU
		{122, 68},     // exactly ETH_MIN_MTU left
		{70000, 1446}, // above ETH_MAX_MTU: fallback
	} {
		if got := s.DefaultMTU(tc.path, false); got != tc.want {
			t.Errorf("path MTU %d: %d, want %d", tc.path, got, tc.want)
		}
	}
	if MaxRxFrame(1446) != 1446+18 {
		t.Error("MaxRxFrame")
	}
	// The peer cookie does not enter the overhead: it is the sent header.
	s.PeerCookie = MustParseCookie("0102030405060708")
	if s.DefaultMTU(1500, false) != 1446 || s.RxHeaderLen() != 20 || s.TxHeaderLen() != 12 {
		t.Error("peer cookie changed the transmit overhead")
	}
}

func TestTxHeader(t *testing.T) {
	for _, tc := range []struct {
		s    Session
		l2ss uint32
		want string
	}{
		{Session{Encap: EncapUDP, PeerSessionID: 0x5e6f7081}, 0, "000300005e6f7081"},
		{Session{Encap: EncapUDP, PeerSessionID: 2002, L2Spec: L2SpecDefault}, SublayerWord(true, 5), "00030000000007d240000005"},
		{Session{Encap: EncapIP, PeerSessionID: 2002, L2Spec: L2SpecDefault}, SublayerWord(false, 5), "000007d200000000"},
		{Session{Encap: EncapIP, PeerSessionID: 1, Cookie: Cookie{b: [8]byte{1, 2, 3, 4}, n: 4}, L2Spec: L2SpecDefault}, SublayerWord(true, 0x1ffffff), "000000010102030440ffffff"},
		// No sublayer: the word is ignored (and the kernel keeps ns still).
		{Session{Encap: EncapIP, PeerSessionID: 1}, 0xdeadbeef, "00000001"},
	} {
		h := NewTxHeader(&tc.s)
		buf := make([]byte, 32)
		n := h.Put(buf, tc.l2ss)
		if n != tc.s.TxHeaderLen() || n != h.Len() {
			t.Errorf("%+v: Put wrote %d, TxHeaderLen %d", tc.s, n, tc.s.TxHeaderLen())
		}
		if got := hexs(buf[:n]); got != tc.want {
			t.Errorf("%+v: header %s, want %s", tc.s, got, tc.want)
		}
		if got := h.Append([]byte{0xaa}, tc.l2ss, []byte{0xbb}); !bytes.Equal(got[1:n+1], buf[:n]) || got[0] != 0xaa || got[n+1] != 0xbb {
			t.Errorf("Append = %x", got)
		}
	}
}

func hexs(b []byte) string {
	const d = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, d[c>>4], d[c&15])
	}
	return string(out)
}

func udpMsg(flags uint16, sid uint32, rest ...byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, flags)
	b = append(b, 0, 0)
	b = binary.BigEndian.AppendUint32(b, sid)
	return append(b, rest...)
}

func TestPeek(t *testing.T) {
	frame := make([]byte, 14)
	for _, tc := range []struct {
		name string
		e    Encap
		b    []byte
		sid  uint32
		ver  uint8
		r    Result
	}{
		{"udp empty", EncapUDP, nil, 0, 0, Short},
		{"udp 13 bytes", EncapUDP, udpMsg(3, 7, 1, 2, 3, 4, 5), 0, 0, Short},
		{"udp 14 bytes", EncapUDP, udpMsg(3, 7, 1, 2, 3, 4, 5, 6), 7, 3, OK},
		{"udp control", EncapUDP, udpMsg(0xc803, 0, frame...), 0, 0, Control},
		{"udp T only", EncapUDP, udpMsg(0x8003, 7, frame...), 0, 0, Control},
		{"udp v2", EncapUDP, udpMsg(0x0002, 7, frame...), 0, 2, UnknownSession},
		{"udp v1", EncapUDP, udpMsg(0x0001, 7, frame...), 7, 1, OK},
		{"udp other flag bits ignored", EncapUDP, udpMsg(0x4ff3, 7, frame...), 7, 3, OK},
		{"udp session 0", EncapUDP, udpMsg(3, 0, frame...), 0, 3, OK},
		{"ip 3 bytes", EncapIP, []byte{0, 0, 1}, 0, Version3, Short},
		{"ip control", EncapIP, []byte{0, 0, 0, 0, 0xc8, 3, 0, 12}, 0, Version3, Control},
		{"ip data", EncapIP, []byte{0, 0, 1, 2}, 0x102, Version3, OK},
	} {
		sid, ver, r := Peek(tc.e, tc.b)
		if sid != tc.sid || ver != tc.ver || r != tc.r {
			t.Errorf("%s: Peek = %#x, %d, %v; want %#x, %d, %v", tc.name, sid, ver, r, tc.sid, tc.ver, tc.r)
		}
	}
}

func TestDecode(t *testing.T) {
	c4, c8 := MustParseCookie("a1a2a3a4"), MustParseCookie("a1a2a3a4b1b2b3b4")
	frame := bytes.Repeat([]byte{0xee}, 14)
	udp := func(s Session) Session { s.Encap = EncapUDP; return s }
	ip := func(s Session) Session { s.Encap = EncapIP; return s }
	base := Session{SessionID: 9, PeerSessionID: 9}
	with := func(c Cookie, l L2Spec) Session { s := base; s.PeerCookie = c; s.L2Spec = l; return s }
	for _, tc := range []struct {
		name string
		s    Session
		b    []byte
		ver  uint8
		r    Result
		d    Data
	}{
		{"udp plain", udp(with(Cookie{}, L2SpecNone)), udpMsg(3, 9, frame...), 3, OK, Data{Offset: 8}},
		{"udp bad version", udp(with(Cookie{}, L2SpecNone)), udpMsg(1, 9, frame...), 1, Invalid, Data{}},
		{"udp version 15", udpWith(with(Cookie{}, L2SpecNone)), udpMsg(0xf, 9, frame...), 15, Invalid, Data{}},
		{"udp cookie4 ok", udp(with(c4, L2SpecNone)), udpMsg(3, 9, append(c4.Bytes(), frame...)...), 3, OK, Data{Offset: 12}},
		{"udp cookie4 bad", udp(with(c4, L2SpecNone)), udpMsg(3, 9, append([]byte{0xa1, 0xa2, 0xa3, 0xa5}, frame...)...), 3, CookieMismatch, Data{}},
		{"udp cookie8 ok", udp(with(c8, L2SpecDefault)), udpMsg(3, 9, append(c8.Bytes(), append([]byte{0x40, 1, 2, 3}, frame...)...)...), 3, OK, Data{HasSeq: true, NS: 0x010203, Offset: 20}},
		{"udp cookie8 bad last byte", udp(with(c8, L2SpecDefault)), udpMsg(3, 9, append([]byte{0xa1, 0xa2, 0xa3, 0xa4, 0xb1, 0xb2, 0xb3, 0}, frame...)...), 3, CookieMismatch, Data{}},
		{"udp cookie8 but 4 sent", udp(with(c8, L2SpecNone)), udpMsg(3, 9, append(c4.Bytes(), frame...)...), 3, CookieMismatch, Data{}},
		{"udp too short for cookie", udp(with(c8, L2SpecDefault)), udpMsg(3, 9, 0xa1, 0xa2, 0xa3, 0xa4, 0xb1, 0xb2), 3, Invalid, Data{}},
		{"ip too short for cookie", ip(with(c8, L2SpecDefault)), []byte{0, 0, 0, 9, 0xa1, 0xa2, 0xa3, 0xa4, 0xb1, 0xb2, 0xb3, 0xb4}, 3, Truncated, Data{}},
		{"ip cookie4 + l2ss", ip(with(c4, L2SpecDefault)), append([]byte{0, 0, 0, 9, 0xa1, 0xa2, 0xa3, 0xa4, 0, 0, 0, 0}, frame...), 3, OK, Data{Offset: 12}},
		{"ip version ignored", ip(with(Cookie{}, L2SpecNone)), append([]byte{0, 0, 0, 9}, frame...), 0, OK, Data{Offset: 4}},
		// Only the S bit matters; other sublayer bits are ignored.
		{"l2ss other bits", ip(with(Cookie{}, L2SpecDefault)), append([]byte{0, 0, 0, 9, 0xbf, 0xff, 0xff, 0xff}, frame...), 3, OK, Data{Offset: 8}},
		{"l2ss S + other bits", ip(with(Cookie{}, L2SpecDefault)), append([]byte{0, 0, 0, 9, 0xff, 0xab, 0xcd, 0xef}, frame...), 3, OK, Data{HasSeq: true, NS: 0xabcdef, Offset: 8}},
		// Peer sends a cookie we don't expect: its bytes are taken as the
		// sublayer and the frame, as in the kernel (no length check).
		{"unexpected cookie", udp(with(Cookie{}, L2SpecDefault)), udpMsg(3, 9, append([]byte{0x40, 0, 0, 1}, frame...)...), 3, OK, Data{HasSeq: true, NS: 1, Offset: 12}},
		// l2spec none never yields sequence numbers.
		{"l2spec none", udp(with(Cookie{}, L2SpecNone)), udpMsg(3, 9, append([]byte{0x40, 0, 0, 1}, frame...)...), 3, OK, Data{Offset: 8}},
		// A header with no room for a frame is still OK here; the
		// Ethernet-length check is the pseudowire's (l2tp_eth).
		{"header only", ip(with(c4, L2SpecNone)), []byte{0, 0, 0, 9, 0xa1, 0xa2, 0xa3, 0xa4}, 3, OK, Data{Offset: 8}},
	} {
		h := NewRxHeader(&tc.s)
		d, r := h.Decode(tc.b, tc.ver)
		if r != tc.r || d != tc.d {
			t.Errorf("%s: Decode = %+v, %v; want %+v, %v", tc.name, d, r, tc.d, tc.r)
		}
		if r == OK && d.Offset != h.Len() {
			t.Errorf("%s: offset %d, Len %d", tc.name, d.Offset, h.Len())
		}
	}
}

func udpWith(s Session) Session { s.Encap = EncapUDP; return s }

func TestResultStrings(t *testing.T) {
	seen := map[string]bool{}
	for r := Result(0); r < numResults; r++ {
		if s := r.String(); s == "" || seen[s] || s == "result?" {
			t.Errorf("result %d has name %q", r, s)
		} else {
			seen[s] = true
		}
	}
	if Result(200).String() != "result?" || EncapIP.String() != "ip" || L2SpecDefault.String() != "default" {
		t.Error("String")
	}
}

func TestCookieText(t *testing.T) {
	for _, s := range []string{"", "01020304", "a1a2a3a4b1b2b3b4"} {
		var c Cookie
		if err := c.UnmarshalText([]byte(s)); err != nil {
			t.Fatal(err)
		}
		if b, _ := c.MarshalText(); string(b) != s {
			t.Fatalf("%q -> %q", s, b)
		}
	}
	var c Cookie
	if err := c.UnmarshalText([]byte("123")); err == nil {
		t.Fatal("accepted 3 digits")
	}
}
