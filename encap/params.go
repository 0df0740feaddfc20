package encap

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// Encap is the tunnel encapsulation. The values are the kernel's
// enum l2tp_encap_type.
type Encap uint8

const (
	EncapUDP Encap = 0 // L2TPv3 over UDP (ip l2tp's default)
	EncapIP  Encap = 1 // L2TPv3 directly over IP, protocol 115
)

// IPProto is the IP protocol number of L2TPv3 over IP (RFC 3931 §4.1.1).
const IPProto = 115

// String is the text form (see [Encap.MarshalText]), or "encap(N)" for a
// value that has none.
func (e Encap) String() string {
	if w, ok := wordOf(encapWords, e); ok {
		return w
	}
	return fmt.Sprintf("encap(%d)", uint8(e))
}

// L2Spec is the L2-specific sublayer type. The values are the kernel's
// L2TP_L2SPECTYPE_*.
type L2Spec uint8

const (
	L2SpecNone    L2Spec = 0 // no sublayer
	L2SpecDefault L2Spec = 1 // RFC 3931 §4.6 default sublayer, 4 bytes (ip l2tp's default)
)

// String is the text form (see [L2Spec.MarshalText]), or "l2spec(N)" for
// a value that has none.
func (l L2Spec) String() string {
	if w, ok := wordOf(l2specWords, l); ok {
		return w
	}
	return fmt.Sprintf("l2spec(%d)", uint8(l))
}

// Len is the number of bytes the sublayer takes on the wire.
func (l L2Spec) Len() int {
	if l == L2SpecDefault {
		return 4
	}
	return 0
}

// Errors returned by the constructors and [Session.Validate]. They can be
// tested with errors.Is.
var (
	ErrCookieLen = errors.New("cookie must be 0, 4 or 8 bytes (8 or 16 hex digits)")
	ErrCookieHex = errors.New("cookie must be a hex string")
	ErrSessionID = errors.New("session IDs must be non-zero (0 is reserved for control messages)")
	ErrBadEncap  = errors.New("encapsulation must be udp or ip")
	ErrBadL2Spec = errors.New("l2spec_type must be none or default")
)

// Cookie is an L2TPv3 cookie of 0, 4 or 8 bytes. The zero value is "no
// cookie". It is a comparable value type.
type Cookie struct {
	b [8]byte
	n uint8
}

// NewCookie returns the cookie with the given bytes (0, 4 or 8 of them).
func NewCookie(b []byte) (Cookie, error) {
	var c Cookie
	switch len(b) {
	case 0, 4, 8:
	default:
		return c, fmt.Errorf("cookie of %d bytes: %w", len(b), ErrCookieLen)
	}
	c.n = uint8(copy(c.b[:], b))
	return c, nil
}

// MustParseCookie is ParseCookie for constants (tests, examples): it
// panics on a malformed cookie.
func MustParseCookie(s string) Cookie {
	c, err := ParseCookie(s)
	if err != nil {
		panic(err)
	}
	return c
}

// ParseCookie parses 8 or 16 hex digits (either case), as ip l2tp does.
func ParseCookie(s string) (Cookie, error) {
	if len(s) != 8 && len(s) != 16 {
		return Cookie{}, fmt.Errorf("cookie %q: %w", s, ErrCookieLen)
	}
	var c Cookie
	if _, err := hex.Decode(c.b[:], []byte(s)); err != nil {
		return Cookie{}, fmt.Errorf("cookie %q: %w", s, ErrCookieHex)
	}
	c.n = uint8(len(s) / 2)
	return c, nil
}

// Len is the cookie length in bytes: 0, 4 or 8.
func (c Cookie) Len() int { return int(c.n) }

// IsZero reports whether c is "no cookie".
func (c Cookie) IsZero() bool { return c.n == 0 }

// Bytes returns a copy of the cookie bytes.
func (c Cookie) Bytes() []byte { return append([]byte(nil), c.b[:c.n]...) }

// String is the lowercase hex form iproute2 prints ("" for no cookie).
func (c Cookie) String() string { return hex.EncodeToString(c.b[:c.n]) }

// Session is what the wire format of one session depends on. Names follow
// ip l2tp: SessionID is expected in received packets, PeerSessionID is sent;
// Cookie is sent, PeerCookie is expected.
type Session struct {
	Encap         Encap
	SessionID     uint32
	PeerSessionID uint32
	Cookie        Cookie
	PeerCookie    Cookie
	L2Spec        L2Spec
}

// Validate reports a configuration the wire format cannot carry.
func (s *Session) Validate() error {
	if s.Encap != EncapUDP && s.Encap != EncapIP {
		return ErrBadEncap
	}
	if s.L2Spec != L2SpecNone && s.L2Spec != L2SpecDefault {
		return ErrBadL2Spec
	}
	if s.SessionID == 0 || s.PeerSessionID == 0 {
		return ErrSessionID
	}
	if (s.Cookie.n != 0 && s.Cookie.n != 4 && s.Cookie.n != 8) ||
		(s.PeerCookie.n != 0 && s.PeerCookie.n != 4 && s.PeerCookie.n != 8) {
		return ErrCookieLen
	}
	return nil
}

// udpHeaderWord is the size of the flags/version word plus the reserved
// field that UDP encapsulation puts before the session ID.
const udpHeaderWord = 4

// TxHeaderLen is the length of the L2TP header this session sends: the
// kernel's session->hdr_len (l2tp_session_set_header_len).
func (s *Session) TxHeaderLen() int {
	n := 4 + s.Cookie.Len() + s.L2Spec.Len()
	if s.Encap == EncapUDP {
		n += udpHeaderWord
	}
	return n
}

// RxHeaderLen is the length of the L2TP header this session expects to
// receive (it differs from TxHeaderLen when the cookies differ in length).
func (s *Session) RxHeaderLen() int {
	n := 4 + s.PeerCookie.Len() + s.L2Spec.Len()
	if s.Encap == EncapUDP {
		n += udpHeaderWord
	}
	return n
}

// Lengths used in the MTU arithmetic.
const (
	EthHeaderLen  = 14   // ETH_HLEN
	IPv4HeaderLen = 20   // without options
	IPv6HeaderLen = 40   // without extension headers
	UDPHeaderLen  = 8    // struct udphdr
	EthDataLen    = 1500 // ETH_DATA_LEN: the fallback path MTU
	ethMaxMTU     = 0xffff
	ethMinMTU     = 68 // ETH_MIN_MTU: a TAP refuses less
	// VLANSlack is what l2tp_eth (dev_forward_skb) allows beyond MTU+14
	// for one VLAN tag: received frames longer than MTU+18 are dropped.
	VLANSlack = 4
)

// Overhead is the kernel's l2tp_eth_adjust_mtu overhead for a session: the
// outer IP header, UDP header when UDP-encapsulated, the L2TP session
// header (as sent), and the inner Ethernet header.
func (s *Session) Overhead(ipv6 bool) int {
	n := s.TxHeaderLen() + EthHeaderLen
	if s.Encap == EncapUDP {
		n += UDPHeaderLen
	}
	if ipv6 {
		n += IPv6HeaderLen
	} else {
		n += IPv4HeaderLen
	}
	return n
}

// DefaultMTU is the MTU the kernel gives a new l2tpeth device: the path MTU
// to the peer minus Overhead, or, when that is out of range (pathMTU 0 means
// no cached route), 1500 minus Overhead.
func (s *Session) DefaultMTU(pathMTU int, ipv6 bool) int {
	oh := s.Overhead(ipv6)
	mtu := pathMTU - oh
	// A path MTU that leaves less than Ethernet's minimum (a tunnel whose
	// local address is gone reports 68) gets the default, as a path
	// MTU the kernel cannot give.
	if pathMTU <= 0 || mtu < ethMinMTU || mtu > ethMaxMTU {
		return EthDataLen - oh
	}
	return mtu
}

// MaxRxFrame is the longest Ethernet frame (without FCS) l2tp_eth passes to
// the stack for an interface MTU: MTU + 14 + one VLAN tag.
func MaxRxFrame(mtu int) int { return mtu + EthHeaderLen + VLANSlack }

// MarshalText is the lowercase hex form ("" for no cookie).
func (c Cookie) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText accepts "" or 8 or 16 hex digits.
func (c *Cookie) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*c = Cookie{}
		return nil
	}
	v, err := ParseCookie(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}
