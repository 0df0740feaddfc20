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

// parseUSO parses a UDP super-frame's headers: parseIP's rules and a UDP
// header with payload.
func parseUSO(f []byte) (s seg, ok bool) {
	s, ok = parseIP(f, unix.IPPROTO_UDP)
	s.hdr = s.l4 + 8
	return s, ok && s.hdr < s.end
}

// parseUDP parses a datagram that may be coalesced: parseUSO, and the UDP
// length agrees with the IP one.
func parseUDP(f []byte) (s seg, ok bool) {
	s, ok = parseUSO(f)
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

// coalesceUDP builds, from datagrams frames[i][offset:] (parsed in segs,
// all as long as the first but the last), one GSO_UDP_L4 frame with its
// virtio_net_hdr in out; it returns its length.
func coalesceUDP(out []byte, frames [][]byte, offset int, segs []seg) int {
	f0, s0 := frames[0][offset:], &segs[0]
	o := vnetHdrLen
	o += copy(out[o:], f0[:s0.hdr])
	for i, f := range frames {
		o += copy(out[o:], f[offset+segs[i].hdr:offset+segs[i].end])
	}
	frame := out[vnetHdrLen:o]
	l3, l4 := s0.l3, s0.l4
	if s0.v6 {
		binary.BigEndian.PutUint16(frame[l3+4:], uint16(len(frame)-l3-40))
	} else {
		binary.BigEndian.PutUint16(frame[l3+2:], uint16(len(frame)-l3))
		frame[l3+10], frame[l3+11] = 0, 0
		binary.BigEndian.PutUint16(frame[l3+10:], ^fold(checksum(0, frame[l3:l3+20])))
	}
	binary.BigEndian.PutUint16(frame[l4+4:], uint16(len(frame)-l4))
	binary.BigEndian.PutUint16(frame[l4+6:], fold(pseudo(frame, s0, len(frame)-l4)))
	h := out[:vnetHdrLen]
	h[0], h[1] = vnetFlagNeedsCsum, vnetGSOUDPL4
	binary.NativeEndian.PutUint16(h[2:], uint16(s0.hdr))        // hdr_len
	binary.NativeEndian.PutUint16(h[4:], uint16(s0.end-s0.hdr)) // gso_size
	binary.NativeEndian.PutUint16(h[6:], uint16(l4))            // csum_start
	binary.NativeEndian.PutUint16(h[8:], 6)                     // csum_offset
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
