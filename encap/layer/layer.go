// Package layer is a gopacket layer for L2TPv3 data messages, for tests and
// tools: gopacket has none. Because the L2TPv3 data header is not
// self-describing, decoding consults a [Table] of sessions (cookie length and
// sublayer per session ID).
//
// Two ways to use it:
//   - Register(table, ports...) hooks the layer into gopacket's own
//     process-wide dispatch (UDP ports and IP protocol 115), so
//     gopacket.NewPacket decodes ... → UDP → L2TPv3 → Ethernet. Like
//     gopacket's layers package this is process-wide; the dataplane never
//     uses it.
//   - A *L2TPv3 with its Table field set is a gopacket.DecodingLayer, with
//     no process-wide state.
package layer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/l2tpu/l2tpu/encap"
)

// Layer type numbers in gopacket's application range (1000-1999).
var (
	// LayerTypeL2TPv3 is L2TPv3 over UDP (with the flags/version word).
	LayerTypeL2TPv3 = gopacket.RegisterLayerType(1701, gopacket.LayerTypeMetadata{
		Name: "L2TPv3", Decoder: gopacket.DecodeFunc(decodeUDP)})
	// LayerTypeL2TPv3IP is L2TPv3 directly over IP protocol 115.
	LayerTypeL2TPv3IP = gopacket.RegisterLayerType(1702, gopacket.LayerTypeMetadata{
		Name: "L2TPv3/IP", Decoder: gopacket.DecodeFunc(decodeIP)})
)

// Errors from decoding.
var (
	ErrTooShort       = errors.New("l2tpv3: packet too short")
	ErrUnknownSession = errors.New("l2tpv3: session ID not in the table (add it with Table.Add)")
	ErrNoTable        = errors.New("l2tpv3: no session table (set L2TPv3.Table or call Register)")
)

// Entry is what the receiver of one session ID expects: the cookie length
// and the sublayer type.
type Entry struct {
	CookieLen int
	L2Spec    encap.L2Spec
}

// Table maps session IDs, as they appear on the wire, to their layout. Fill
// it before decoding; it is not safe to change while packets are decoded.
type Table struct {
	m map[uint32]Entry
}

// NewTable returns an empty table.
func NewTable() *Table { return &Table{m: make(map[uint32]Entry)} }

// Add records the layout of packets carrying session ID sid.
func (t *Table) Add(sid uint32, e Entry) *Table { t.m[sid] = e; return t }

// AddSession records both directions of a session: packets it sends
// (PeerSessionID, Cookie) and packets it receives (SessionID, PeerCookie).
func (t *Table) AddSession(s *encap.Session) *Table {
	t.m[s.PeerSessionID] = Entry{CookieLen: s.Cookie.Len(), L2Spec: s.L2Spec}
	t.m[s.SessionID] = Entry{CookieLen: s.PeerCookie.Len(), L2Spec: s.L2Spec}
	return t
}

// Lookup returns the layout for sid.
func (t *Table) Lookup(sid uint32) (Entry, bool) {
	e, ok := t.m[sid]
	return e, ok
}

var registered atomic.Pointer[Table]

// Register makes gopacket decode UDP traffic to or from the given ports and
// all IP protocol 115 traffic as L2TPv3 using t. It changes gopacket's
// process-wide registries; call it from tests and tools, not libraries.
func Register(t *Table, udpPorts ...uint16) {
	registered.Store(t)
	for _, p := range udpPorts {
		layers.RegisterUDPPortLayerType(layers.UDPPort(p), LayerTypeL2TPv3)
	}
	layers.IPProtocolMetadata[encap.IPProto] = layers.EnumMetadata{
		DecodeWith: gopacket.DecodeFunc(decodeIP), Name: "L2TPv3", LayerType: LayerTypeL2TPv3IP}
}

// L2TPv3 is one data (or, over UDP, control) message header.
type L2TPv3 struct {
	layers.BaseLayer
	Encap     encap.Encap
	Flags     uint16 // UDP only: T bit and version nibble (0x0003 for data)
	Reserved  uint16 // UDP only
	SessionID uint32
	Cookie    []byte
	Sublayer  bool   // the default L2-specific sublayer is present
	L2SS      uint32 // its raw 32-bit word
	Table     *Table // used by DecodeFromBytes; nil: the registered table
}

// Control reports a control message (UDP T bit, or IP session ID 0).
func (l *L2TPv3) Control() bool {
	if l.Encap == encap.EncapUDP {
		return l.Flags&0x8000 != 0
	}
	return l.SessionID == 0
}

// Version is the UDP header's version nibble (3 for IP encapsulation).
func (l *L2TPv3) Version() uint8 {
	if l.Encap == encap.EncapUDP {
		return uint8(l.Flags & 0xf)
	}
	return encap.Version3
}

// HasSeq reports the sublayer's S bit; Seq is its 24-bit sequence number.
func (l *L2TPv3) HasSeq() bool { return l.Sublayer && l.L2SS&0x40000000 != 0 }
func (l *L2TPv3) Seq() uint32  { return l.L2SS & encap.SeqMask }

func (l *L2TPv3) LayerType() gopacket.LayerType {
	if l.Encap == encap.EncapIP {
		return LayerTypeL2TPv3IP
	}
	return LayerTypeL2TPv3
}

func (l *L2TPv3) CanDecode() gopacket.LayerClass { return l.LayerType() }

func (l *L2TPv3) NextLayerType() gopacket.LayerType {
	if l.Control() {
		return gopacket.LayerTypePayload
	}
	return layers.LayerTypeEthernet
}

// DecodeFromBytes decodes with l.Encap choosing the layout.
func (l *L2TPv3) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	t := l.Table
	if t == nil {
		t = registered.Load()
	}
	*l = L2TPv3{Encap: l.Encap, Table: l.Table}
	off := 0
	if l.Encap == encap.EncapUDP {
		if len(data) < 4 {
			return ErrTooShort
		}
		l.Flags = binary.BigEndian.Uint16(data)
		l.Reserved = binary.BigEndian.Uint16(data[2:])
		off = 4
		if l.Control() {
			l.BaseLayer = layers.BaseLayer{Contents: data[:off], Payload: data[off:]}
			return nil
		}
	}
	if len(data) < off+4 {
		return ErrTooShort
	}
	l.SessionID = binary.BigEndian.Uint32(data[off:])
	off += 4
	if l.Control() {
		l.BaseLayer = layers.BaseLayer{Contents: data[:off], Payload: data[off:]}
		return nil
	}
	if t == nil {
		return ErrNoTable
	}
	e, ok := t.Lookup(l.SessionID)
	if !ok {
		return fmt.Errorf("%w: %#x", ErrUnknownSession, l.SessionID)
	}
	need := off + e.CookieLen + e.L2Spec.Len()
	if len(data) < need {
		return ErrTooShort
	}
	if e.CookieLen > 0 {
		l.Cookie = data[off : off+e.CookieLen]
		off += e.CookieLen
	}
	if e.L2Spec == encap.L2SpecDefault {
		l.Sublayer = true
		l.L2SS = binary.BigEndian.Uint32(data[off:])
		off += 4
	}
	l.BaseLayer = layers.BaseLayer{Contents: data[:off], Payload: data[off:]}
	return nil
}

// SerializeTo prepends the header described by l's fields.
func (l *L2TPv3) SerializeTo(b gopacket.SerializeBuffer, opts gopacket.SerializeOptions) error {
	udpCtl := l.Encap == encap.EncapUDP && l.Control()
	n := 4 // UDP flags word, or IP session ID
	if l.Encap == encap.EncapUDP && !udpCtl {
		n += 4 // session ID
	}
	if !l.Control() {
		n += len(l.Cookie)
		if l.Sublayer {
			n += 4
		}
	}
	hdr, err := b.PrependBytes(n)
	if err != nil {
		return err
	}
	off := 0
	if l.Encap == encap.EncapUDP {
		binary.BigEndian.PutUint16(hdr, l.Flags)
		binary.BigEndian.PutUint16(hdr[2:], l.Reserved)
		if udpCtl {
			return nil // the control header itself is payload here
		}
		off = 4
	}
	binary.BigEndian.PutUint32(hdr[off:], l.SessionID)
	off += 4
	if l.Control() {
		return nil
	}
	off += copy(hdr[off:], l.Cookie)
	if l.Sublayer {
		binary.BigEndian.PutUint32(hdr[off:], l.L2SS)
	}
	return nil
}

// ForSession returns the header s sends for a packet with sublayer word
// l2ss (see encap.SublayerWord).
func ForSession(s *encap.Session, l2ss uint32) *L2TPv3 {
	l := &L2TPv3{Encap: s.Encap, SessionID: s.PeerSessionID, Cookie: s.Cookie.Bytes(),
		Sublayer: s.L2Spec == encap.L2SpecDefault, L2SS: l2ss}
	if s.Encap == encap.EncapUDP {
		l.Flags = encap.Version3
	}
	return l
}

// Get returns the packet's L2TPv3 layer of either encapsulation, or nil.
func Get(p gopacket.Packet) *L2TPv3 {
	if ly := p.Layer(LayerTypeL2TPv3); ly != nil {
		return ly.(*L2TPv3)
	}
	if ly := p.Layer(LayerTypeL2TPv3IP); ly != nil {
		return ly.(*L2TPv3)
	}
	return nil
}

func decodeUDP(data []byte, p gopacket.PacketBuilder) error {
	return decodeAs(encap.EncapUDP, data, p)
}

func decodeIP(data []byte, p gopacket.PacketBuilder) error {
	return decodeAs(encap.EncapIP, data, p)
}

func decodeAs(e encap.Encap, data []byte, p gopacket.PacketBuilder) error {
	l := &L2TPv3{Encap: e}
	if err := l.DecodeFromBytes(data, p); err != nil {
		return err
	}
	p.AddLayer(l)
	return p.NextDecoder(l.NextLayerType())
}
