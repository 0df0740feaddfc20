package tap

import (
	"encoding/binary"
	"math/bits"
)

// checksum adds b to a one's-complement sum (of big-endian 16-bit words;
// the caller folds). It sums native little-endian 64-bit words with carries,
// 32 bytes a round, and swaps once at the end: one's-complement addition
// does not care about byte order as long as it is swapped back (RFC 1071).
func checksum(sum uint64, b []byte) uint64 {
	var ac, carry uint64
	for len(b) >= 32 {
		var c uint64
		ac, c = bits.Add64(ac, binary.LittleEndian.Uint64(b), 0)
		ac, c = bits.Add64(ac, binary.LittleEndian.Uint64(b[8:]), c)
		ac, c = bits.Add64(ac, binary.LittleEndian.Uint64(b[16:]), c)
		ac, c = bits.Add64(ac, binary.LittleEndian.Uint64(b[24:]), c)
		carry += c
		b = b[32:]
	}
	for len(b) >= 8 {
		var c uint64
		ac, c = bits.Add64(ac, binary.LittleEndian.Uint64(b), 0)
		carry += c
		b = b[8:]
	}
	// Fold to 32 bits, leaving room for the tail.
	ac, c := bits.Add64(ac, carry, 0)
	ac += c
	ac = ac&0xffffffff + ac>>32
	if len(b) >= 4 {
		ac += uint64(binary.LittleEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		ac += uint64(binary.LittleEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		ac += uint64(b[0]) // an even offset: the low byte of a little-endian word
	}
	return sum + uint64(bits.ReverseBytes16(fold(ac)))
}

func fold(sum uint64) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// pseudo is the TCP or UDP pseudo-header sum for l4Len bytes of transport
// header and payload.
func pseudo(f []byte, s *seg, l4Len int) uint64 {
	var sum uint64
	if s.v6 {
		sum = checksum(0, f[s.l3+8:s.l3+40])
	} else {
		sum = checksum(0, f[s.l3+12:s.l3+20])
	}
	return sum + uint64(s.t.proto) + uint64(l4Len)
}

// csumOK checks a frame's TCP or UDP checksum: l2tp carries no integrity of
// its own, and merged data is checksummed anew, so a corrupt segment must
// not be merged into a valid super-frame.
func csumOK(f []byte, s *seg) bool {
	return fold(checksum(pseudo(f, s, s.end-s.l4), f[s.l4:s.end])) == 0xffff
}

// putL4Csum computes and writes the TCP or UDP checksum of seg.
func putL4Csum(seg []byte, s *seg) {
	c := s.l4 + s.t.csum
	seg[c], seg[c+1] = 0, 0
	sum := ^fold(checksum(pseudo(seg, s, len(seg)-s.l4), seg[s.l4:]))
	if sum == 0 && !s.t.stream {
		sum = 0xffff // UDP: 0 would mean no checksum
	}
	binary.BigEndian.PutUint16(seg[c:], sum)
}

// completeCsum fills in the checksum the stack left to the device: the
// field at start+off holds the pseudo-header sum; the sum runs from start.
func completeCsum(f []byte, start, off int) bool {
	if start+off+2 > len(f) || start < 0 {
		return false
	}
	binary.BigEndian.PutUint16(f[start+off:], ^fold(checksum(0, f[start:])))
	return true
}
