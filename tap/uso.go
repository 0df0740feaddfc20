package tap

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// UDP segmentation offload (Linux 6.2 on): with USO negotiated, reads may
// be UDP super-frames (a socket sending with UDP_SEGMENT) that Read cuts
// into datagrams, and writes may carry runs of datagrams of one flow as
// one GSO_UDP_L4 frame: the stack above splits them again, at the boundaries
// they had, so small-packet flows take one write per run instead of one per
// datagram.

const vnetGSOUDPL4 = 5

// parseUDPSuper parses a UDP super-frame's headers: parseIP's rules and a UDP
// header with payload.
func parseUDPSuper(f []byte) (s seg, ok bool) {
	s, ok = parseIP(f, unix.IPPROTO_UDP)
	s.hdr = s.l4 + 8
	return s, ok && s.hdr < s.end && s.hdr <= maxMergeHdr
}

// parseUDP parses a datagram that may be coalesced: parseUDPSuper, and the UDP
// length agrees with the IP one.
func parseUDP(f []byte) (s seg, ok bool) {
	s, ok = parseUDPSuper(f)
	return s, ok && int(binary.BigEndian.Uint16(f[s.l4+4:])) == s.end-s.l4
}

// validUDP: only datagrams with a checksum, and a right one, are merged (the
// stack checksums the merged frame anew; one sent without a checksum stays
// as it was).
func validUDP(f []byte, s *seg) bool {
	if f[s.l4+6] == 0 && f[s.l4+7] == 0 {
		return false
	}
	return fold(checksum(pseudo(f, s, s.end-s.l4), f[s.l4:s.end])) == 0xffff
}

// canFollowUDP reports whether datagram b may follow a in one GSO frame:
// same headers up to the ports, and IPv4 IDs the split will reproduce
// (consecutive; or don't-fragment, where the ID means nothing, RFC 6864).
func canFollowUDP(a []byte, sa *seg, b []byte, sb *seg) bool {
	if sa.l4 != sb.l4 || sa.v6 != sb.v6 || string(a[:sa.l3]) != string(b[:sb.l3]) ||
		string(a[sa.l4:sa.l4+4]) != string(b[sb.l4:sb.l4+4]) {
		return false
	}
	l3 := sa.l3
	if sa.v6 {
		return string(a[l3:l3+4]) == string(b[l3:l3+4]) && string(a[l3+6:l3+40]) == string(b[l3+6:l3+40])
	}
	if a[l3+1] != b[l3+1] || a[l3+6] != b[l3+6] || string(a[l3+8:l3+10]) != string(b[l3+8:l3+10]) ||
		string(a[l3+12:l3+20]) != string(b[l3+12:l3+20]) {
		return false
	}
	const df = 0x40
	return a[l3+6]&df != 0 || binary.BigEndian.Uint16(b[l3+4:]) == binary.BigEndian.Uint16(a[l3+4:])+1
}

// mergeUDP is mergeTCP for a run of datagrams of one flow, all as long as
// the first but the last: one GSO_UDP_L4 frame.
func mergeUDP(h []byte, frames [][]byte, offset int, segs []seg) int {
	f0, s0 := frames[0][offset:], &segs[0]
	total := s0.hdr
	for i := range segs {
		total += segs[i].end - segs[i].hdr
	}
	o := vnetHdrLen + copy(h[vnetHdrLen:], f0[:s0.hdr])
	frame := h[vnetHdrLen:o]
	l4 := s0.l4
	ipLengths(frame, s0, total)
	binary.BigEndian.PutUint16(frame[l4+4:], uint16(total-l4))
	binary.BigEndian.PutUint16(frame[l4+6:], fold(pseudo(frame, s0, total-l4)))
	vnetGSO(h, vnetGSOUDPL4, s0, s0.end-s0.hdr, 6)
	return o
}

// udpRun returns the end j of the run of datagrams starting at bufs[i]
// (parsed as s) that may go out as one frame, and their parses in segs.
func udpRun(bufs [][]byte, offset, i int, s seg, segs []seg) (int, []seg) {
	segs = append(segs[:0], s)
	size := s.end - s.hdr
	total := s.end - s.l3
	j := i + 1
	for j < len(bufs) && j-i < groMaxSegs {
		g := bufs[j][offset:]
		t, ok := parseUDP(g)
		n := t.end - t.hdr
		if !ok || n > size || total+n > groMaxSize || !canFollowUDP(bufs[j-1][offset:], &segs[len(segs)-1], g, &t) || !validUDP(g, &t) {
			break
		}
		segs = append(segs, t)
		total += n
		j++
		if n < size {
			break // a shorter one ends the run
		}
	}
	return j, segs
}
