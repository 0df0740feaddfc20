package tap

import (
	"encoding/binary"
	"hash/maphash"

	"golang.org/x/sys/unix"
)

// l3 finds an Ethernet frame's network header past up to two VLAN tags
// (QinQ): its offset and EtherType.
func l3(f []byte) (off int, et uint16, ok bool) {
	if len(f) < 14 {
		return 0, 0, false
	}
	off, et = 14, binary.BigEndian.Uint16(f[12:])
	for et == 0x8100 || et == 0x88a8 {
		if len(f) < off+4 || off >= 14+2*4 {
			return 0, 0, false
		}
		et = binary.BigEndian.Uint16(f[off+2:])
		off += 4
	}
	return off, et, true
}

// FlowSeed keys FlowHash: a process's own, so that nobody can aim frames
// at one flow's hash from outside.
type FlowSeed = maphash.Seed

// NewFlowSeed returns a random seed.
func NewFlowSeed() FlowSeed { return maphash.MakeSeed() }

// FlowHash hashes what tells an Ethernet frame's flow apart: for IPv4 and
// IPv6 the addresses, the protocol and, for TCP and UDP (and not a
// fragment after the first), the ports; otherwise the EtherType and the
// MAC addresses. Frames of one flow hash alike. It also reports whether
// the flow is TCP, which slows down when it loses frames.
func FlowHash(seed FlowSeed, f []byte) (hash uint64, tcp bool) {
	off, et, ok := l3(f)
	if !ok {
		return maphash.Bytes(seed, f[:min(len(f), 12)]), false
	}
	var key []byte
	l4, proto := -1, byte(0)
	switch {
	case et == 0x0800 && len(f) >= off+20:
		key = f[off+12 : off+20] // addresses
		proto = f[off+9]
		if binary.BigEndian.Uint16(f[off+6:])&0x1fff == 0 { // no fragment offset
			l4 = off + int(f[off]&0xf)*4
		}
	case et == 0x86dd && len(f) >= off+40:
		key = f[off+8 : off+40]
		proto, l4 = f[off+6], off+40 // extension headers: ports unread, the flow is coarser
	default:
		var h maphash.Hash
		h.SetSeed(seed)
		h.Write(f[:12])
		h.Write(f[12:off])
		return h.Sum64(), false
	}
	var h maphash.Hash
	h.SetSeed(seed)
	h.Write(key)
	h.WriteByte(proto)
	if (proto == unix.IPPROTO_TCP || proto == unix.IPPROTO_UDP) && l4 >= 0 && len(f) >= l4+4 {
		h.Write(f[l4 : l4+4])
	}
	return h.Sum64(), proto == unix.IPPROTO_TCP
}
