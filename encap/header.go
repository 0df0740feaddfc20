package encap

import "encoding/binary"

// Wire constants of the L2TPv3 header.
const (
	flagT       = 0x8000     // T bit of the UDP flags word: control message
	verMask     = 0x000f     // version nibble of the UDP flags word
	Version3    = 3          // L2TPv3
	l2ssS       = 0x40000000 // S bit of the default L2-specific sublayer
	SeqMask     = 0x00ffffff // 24-bit sequence number space (nr_max)
	udpMinLen   = 14         // L2TP_HDR_SIZE_MAX: shorter UDP payloads are not looked at
	ipMinLen    = 4          // session ID
	maxTxHeader = udpHeaderWord + 4 + 8 + 4
)

// MaxHeaderLen is the longest L2TPv3 data header: UDP word, session ID,
// 8-byte cookie and sublayer. Buffers keep this much headroom (plus the
// outer headers, when built by hand) so the header is prepended in place.
const MaxHeaderLen = maxTxHeader

// TxHeader is a session's prebuilt transmit header. Only the sublayer word
// changes from packet to packet; Put copies the rest.
type TxHeader struct {
	b      [maxTxHeader]byte
	n      uint8
	l2ss   uint8 // offset of the sublayer word; 0 when there is none
	hasL2S bool
}

// NewTxHeader builds the header the kernel's l2tp_build_l2tpv3_header
// writes for s: for UDP the word 00 03 00 00, then PeerSessionID, Cookie
// and, with the default sublayer, a 32-bit word.
func NewTxHeader(s *Session) TxHeader {
	var h TxHeader
	off := 0
	if s.Encap == EncapUDP {
		binary.BigEndian.PutUint16(h.b[0:], Version3) // T=0, reserved 0
		off = udpHeaderWord
	}
	binary.BigEndian.PutUint32(h.b[off:], s.PeerSessionID)
	off += 4
	off += copy(h.b[off:], s.Cookie.b[:s.Cookie.n])
	if s.L2Spec == L2SpecDefault {
		h.l2ss = uint8(off)
		h.hasL2S = true
		off += 4
	}
	h.n = uint8(off)
	return h
}

// Len is the header length in bytes.
func (h *TxHeader) Len() int { return int(h.n) }

// HasSublayer reports whether the header carries the default sublayer, and
// so whether sequence numbers can be sent at all.
func (h *TxHeader) HasSublayer() bool { return h.hasL2S }

// Put writes the header to dst[:h.Len()] with the given sublayer word (see
// [SublayerWord]; ignored without a sublayer) and returns h.Len(). dst must
// be at least h.Len() bytes long.
func (h *TxHeader) Put(dst []byte, l2ss uint32) int {
	n := int(h.n)
	_ = dst[n-1]
	copy(dst[:n], h.b[:n])
	if h.hasL2S {
		binary.BigEndian.PutUint32(dst[h.l2ss:], l2ss)
	}
	return n
}

// Append appends the header and frame to dst; convenient for tests and
// tools, the dataplane uses Put into headroom instead.
func (h *TxHeader) Append(dst []byte, l2ss uint32, frame []byte) []byte {
	start := len(dst)
	dst = append(dst, h.b[:h.n]...)
	if h.hasL2S {
		binary.BigEndian.PutUint32(dst[start+int(h.l2ss):], l2ss)
	}
	return append(dst, frame...)
}

// SublayerWord is the default sublayer the kernel sends: S bit and the
// 24-bit ns when sending sequence numbers, all zeros otherwise.
func SublayerWord(sendSeq bool, ns uint32) uint32 {
	if sendSeq {
		return l2ssS | ns&SeqMask
	}
	return 0
}

// Result is the outcome of classifying a received packet. Each names the
// counter the kernel moves for it, if any.
type Result uint8

const (
	// OK: a data message for the session; deliver (subject to Seq).
	OK Result = iota
	// Short: UDP payload under 14 bytes or IP payload under 4: not looked
	// at as L2TP at all. No counter.
	Short
	// Control: T bit set (UDP) or session ID 0 (IP): a control message,
	// which static tunnels ignore. No counter.
	Control
	// UnknownSession: no session has this ID (L2TPv2 headers land here
	// too: there are no v2 sessions). No counter.
	UnknownSession
	// Invalid: UDP header with a version other than 3, or too short for
	// the session's cookie and sublayer. Tunnel rx_invalid.
	Invalid
	// Truncated: IP packet too short for the session's cookie and
	// sublayer. Silently discarded, no counter (l2tp_ip discard_sess).
	Truncated
	// CookieMismatch: the cookie differs from peer_cookie. Session
	// rx_cookie_discards and rx_errors.
	CookieMismatch
	numResults
)

var resultNames = [numResults]string{"ok", "short", "control", "unknown-session", "invalid", "truncated", "cookie-mismatch"}

func (r Result) String() string {
	if r < numResults {
		return resultNames[r]
	}
	return "result?"
}

// PeekUDP reads the session ID of an L2TP-over-UDP payload (the bytes after
// the UDP header), as l2tp_udp_encap_recv does before its session lookup.
// The version nibble is returned for [RxHeader.Decode] to check once the
// session is known. r is OK, Short, Control or UnknownSession (version 2).
func PeekUDP(b []byte) (sid uint32, ver uint8, r Result) {
	if len(b) < udpMinLen {
		return 0, 0, Short
	}
	flags := binary.BigEndian.Uint16(b)
	if flags&flagT != 0 {
		return 0, 0, Control
	}
	ver = uint8(flags & verMask)
	if ver == 2 {
		// The kernel looks this up as an L2TPv2 session; l2tpu has none.
		return 0, ver, UnknownSession
	}
	return binary.BigEndian.Uint32(b[4:]), ver, OK
}

// PeekIP reads the session ID of an L2TP-over-IP payload (the bytes after
// the IP header). r is OK, Short or Control (session ID 0).
func PeekIP(b []byte) (sid uint32, r Result) {
	if len(b) < ipMinLen {
		return 0, Short
	}
	sid = binary.BigEndian.Uint32(b)
	if sid == 0 {
		return 0, Control
	}
	return sid, OK
}

// Peek dispatches to PeekUDP or PeekIP. For IP the version is reported as 3.
func Peek(e Encap, b []byte) (sid uint32, ver uint8, r Result) {
	if e == EncapUDP {
		return PeekUDP(b)
	}
	sid, r = PeekIP(b)
	return sid, Version3, r
}

// RxHeader is what a session expects in received headers, precomputed.
type RxHeader struct {
	cookie  uint64 // expected cookie, big-endian value of its bytes
	cookieN uint8
	base    uint8 // offset of the cookie: 8 for UDP, 4 for IP
	hasL2S  bool
	udp     bool
	hdrLen  uint8 // base + cookie + sublayer
}

// NewRxHeader precomputes s's receive checks.
func NewRxHeader(s *Session) RxHeader {
	h := RxHeader{cookieN: s.PeerCookie.n, hasL2S: s.L2Spec == L2SpecDefault, udp: s.Encap == EncapUDP}
	switch s.PeerCookie.n {
	case 4:
		h.cookie = uint64(binary.BigEndian.Uint32(s.PeerCookie.b[:]))
	case 8:
		h.cookie = binary.BigEndian.Uint64(s.PeerCookie.b[:])
	}
	h.base = 4
	if h.udp {
		h.base = 8
	}
	h.hdrLen = h.base + h.cookieN
	if h.hasL2S {
		h.hdrLen += 4
	}
	return h
}

// Len is the header length the session expects; the frame starts there.
func (h *RxHeader) Len() int { return int(h.hdrLen) }

// Data describes an accepted data message.
type Data struct {
	HasSeq bool   // the sublayer's S bit was set
	NS     uint32 // its 24-bit sequence number, when HasSeq
	Offset int    // where the Ethernet frame starts in the packet
}

// Decode checks a packet that [Peek] matched to this session, in the
// kernel's order: version (UDP), length, cookie, sublayer. b is the L2TP
// message (for UDP the bytes after the UDP header), ver what Peek returned.
// Only the cookie and the S bit of the sublayer are looked at; the other
// sublayer and reserved bits are ignored, as by the kernel.
func (h *RxHeader) Decode(b []byte, ver uint8) (Data, Result) {
	if h.udp && ver != Version3 {
		return Data{}, Invalid
	}
	if len(b) < int(h.hdrLen) {
		if h.udp {
			return Data{}, Invalid
		}
		return Data{}, Truncated
	}
	off := int(h.base)
	switch h.cookieN {
	case 4:
		if uint64(binary.BigEndian.Uint32(b[off:])) != h.cookie {
			return Data{}, CookieMismatch
		}
	case 8:
		if binary.BigEndian.Uint64(b[off:]) != h.cookie {
			return Data{}, CookieMismatch
		}
	}
	off += int(h.cookieN)
	var d Data
	if h.hasL2S {
		w := binary.BigEndian.Uint32(b[off:])
		if w&l2ssS != 0 {
			d.HasSeq = true
			d.NS = w & SeqMask
		}
		off += 4
	}
	d.Offset = off
	return d, OK
}
