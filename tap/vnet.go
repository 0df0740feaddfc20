package tap

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// With IFF_VNET_HDR every frame on the TAP fd is preceded by a struct
// virtio_net_hdr. What l2tpu writes may be GSO super-frames: consecutive
// segments of one TCP flow are coalesced (GRO in userspace), so the stack
// above the TAP takes one packet where it would take dozens. What it reads
// is plain frames, or with offloads (segment.go) super-frames it segments itself.

const (
	vnetHdrLen        = 10
	vnetFlagNeedsCsum = 1
	vnetGSONone       = 0
	vnetGSOTCPv4      = 1
	vnetGSOTCPv6      = 4
	groMaxSize        = 65535 // IP length fields
	groMaxSegs        = 64
)

// seg is a parsed TCP or UDP frame that may be coalesced or segmented.
type seg struct {
	l3, l4, hdr, end int // offsets: IP, TCP/UDP, payload, end of IP packet
	v6               bool
	proto            byte   // unix.IPPROTO_TCP or IPPROTO_UDP
	seq              uint32 // TCP
	flags            byte   // TCP
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpURG = 0x20
	tcpECE = 0x40
	tcpCWR = 0x80
)

// parseIP finds the IP packet in an Ethernet (optionally VLAN-tagged)
// frame and checks it carries proto: IPv4 without options or fragments, or
// IPv6 without extension headers. It fills l3, l4, end and v6.
func parseIP(f []byte, proto byte) (s seg, ok bool) {
	if len(f) < 14 {
		return s, false
	}
	l3, et := 14, binary.BigEndian.Uint16(f[12:])
	for et == 0x8100 || et == 0x88a8 {
		if len(f) < l3+4 || l3 >= 14+2*4 { // two tags at most (QinQ)
			return s, false
		}
		et = binary.BigEndian.Uint16(f[l3+2:])
		l3 += 4
	}
	s.l3, s.proto = l3, proto
	switch et {
	case 0x0800:
		if len(f) < l3+20 || f[l3] != 0x45 || f[l3+9] != proto {
			return s, false
		}
		if binary.BigEndian.Uint16(f[l3+6:])&0x3fff != 0 { // MF or offset
			return s, false
		}
		s.l4, s.end = l3+20, l3+int(binary.BigEndian.Uint16(f[l3+2:]))
	case 0x86dd:
		if len(f) < l3+40 || f[l3]>>4 != 6 || f[l3+6] != proto {
			return s, false
		}
		s.v6 = true
		s.l4, s.end = l3+40, l3+40+int(binary.BigEndian.Uint16(f[l3+4:]))
	default:
		return s, false
	}
	return s, s.end <= len(f) && s.l4 <= s.end
}

// parseTCPAny reports whether f is an Ethernet (optionally VLAN-tagged)
// frame carrying a TCP segment with payload (parseIP's rules).
func parseTCPAny(f []byte) (s seg, ok bool) {
	s, ok = parseIP(f, unix.IPPROTO_TCP)
	if !ok || s.l4+20 > s.end {
		return s, false
	}
	thl := int(f[s.l4+12]>>4) * 4
	s.hdr = s.l4 + thl
	if thl < 20 || s.hdr >= s.end { // no payload: nothing to gain
		return s, false
	}
	s.seq = binary.BigEndian.Uint32(f[s.l4+4:])
	s.flags = f[s.l4+13]
	return s, true
}

// parseTCP is parseTCPAny for segments that may be coalesced: no SYN, FIN,
// RST, URG, ECE or CWR.
func parseTCP(f []byte) (s seg, ok bool) {
	s, ok = parseTCPAny(f)
	if ok && s.flags&(tcpSYN|tcpFIN|tcpRST|tcpURG|tcpECE|tcpCWR) != 0 {
		return s, false
	}
	return s, ok
}

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
	return sum + uint64(s.proto) + uint64(l4Len)
}

// validTCP checks a segment's TCP checksum: l2tp carries no integrity of
// its own, and coalesced data is checksummed anew.
func validTCP(f []byte, s *seg) bool {
	return fold(checksum(pseudo(f, s, s.end-s.l4), f[s.l4:s.end])) == 0xffff
}

// canFollow reports whether segment b continues segment a's flow.
func canFollow(a []byte, sa *seg, aPayload int, b []byte, sb *seg) bool {
	if sa.l4 != sb.l4 || sa.hdr != sb.hdr || sa.v6 != sb.v6 {
		return false
	}
	if sb.seq != sa.seq+uint32(aPayload) {
		return false
	}
	// Ethernet and VLAN headers, then the IP header fields that must match.
	if string(a[:sa.l3]) != string(b[:sb.l3]) {
		return false
	}
	if sa.v6 {
		// version, class, flow label; addresses; hop limit and next header
		if string(a[sa.l3:sa.l3+4]) != string(b[sb.l3:sb.l3+4]) || string(a[sa.l3+6:sa.l3+40]) != string(b[sb.l3+6:sb.l3+40]) {
			return false
		}
	} else {
		// TOS; flags (DF); TTL, protocol; addresses
		if a[sa.l3+1] != b[sb.l3+1] || a[sa.l3+6] != b[sb.l3+6] || string(a[sa.l3+8:sa.l3+10]) != string(b[sb.l3+8:sb.l3+10]) ||
			string(a[sa.l3+12:sa.l3+20]) != string(b[sb.l3+12:sb.l3+20]) {
			return false
		}
	}
	// TCP: ports; ack number; data offset, flags but PSH, window; options.
	if string(a[sa.l4:sa.l4+4]) != string(b[sb.l4:sb.l4+4]) || string(a[sa.l4+8:sa.l4+12]) != string(b[sb.l4+8:sb.l4+12]) ||
		a[sa.l4+12] != b[sb.l4+12] || a[sa.l4+13]&^tcpPSH != b[sb.l4+13]&^tcpPSH ||
		string(a[sa.l4+14:sa.l4+16]) != string(b[sb.l4+14:sb.l4+16]) || string(a[sa.l4+20:sa.hdr]) != string(b[sb.l4+20:sb.hdr]) {
		return false
	}
	return true
}

// superSize holds the largest frame the TUN driver hands over: an IP packet
// of 64 KiB behind an Ethernet header and two VLAN tags, or a plain frame
// of the largest MTU.
const superSize = vnetHdrLen + max(groMaxSize+14+8, MaxFrame)

var superPool = sync.Pool{New: func() any { b := make([]byte, superSize); return &b }}

// maxMergeHdr bounds the headers (Ethernet, VLAN tags, IP, TCP) of a
// frame that is merged: they are written ahead of the gathered payloads.
const maxMergeHdr = 192

// mergeTCP writes into h the virtio_net_hdr and the headers of one GSO
// frame made of frames[i][offset:] (following each other, parsed in segs):
// the first frame's headers with the merged lengths, PSH if any had it, and
// the checksum left to the kernel (NEEDS_CSUM: the field holds the
// pseudo-header sum; the kernel completes it, and each segment's, if it
// resegments). The payloads follow unchanged. It returns len(h) used.
func mergeTCP(h []byte, frames [][]byte, offset int, segs []seg) int {
	f0, s0 := frames[0][offset:], &segs[0]
	total := s0.hdr
	var flags byte
	for i := range segs {
		total += segs[i].end - segs[i].hdr
		flags |= segs[i].flags & tcpPSH
	}
	o := vnetHdrLen + copy(h[vnetHdrLen:], f0[:s0.hdr])
	frame := h[vnetHdrLen:o]
	l4 := s0.l4
	gso := uint8(vnetGSOTCPv4)
	if s0.v6 {
		gso = vnetGSOTCPv6
	}
	ipLengths(frame, s0, total)
	frame[l4+13] |= flags
	binary.BigEndian.PutUint16(frame[l4+16:], fold(pseudo(frame, s0, total-l4)))
	vnetGSO(h, gso, s0, segs[0].end-segs[0].hdr, 16)
	return o
}

// ipLengths sets the IP length fields (and IPv4's header checksum) of
// headers for a packet ending at total.
func ipLengths(frame []byte, s *seg, total int) {
	l3 := s.l3
	if s.v6 {
		binary.BigEndian.PutUint16(frame[l3+4:], uint16(total-l3-40))
		return
	}
	binary.BigEndian.PutUint16(frame[l3+2:], uint16(total-l3))
	frame[l3+10], frame[l3+11] = 0, 0
	binary.BigEndian.PutUint16(frame[l3+10:], ^fold(checksum(0, frame[l3:l3+20])))
}

// vnetGSO fills a virtio_net_hdr for a GSO frame with checksum offload.
func vnetGSO(h []byte, gso uint8, s *seg, size, csumOff int) {
	h[0], h[1] = vnetFlagNeedsCsum, gso
	binary.NativeEndian.PutUint16(h[2:], uint16(s.hdr)) // hdr_len
	binary.NativeEndian.PutUint16(h[4:], uint16(size))  // gso_size
	binary.NativeEndian.PutUint16(h[6:], uint16(s.l4))  // csum_start
	binary.NativeEndian.PutUint16(h[8:], uint16(csumOff))
}

// writeVnet writes frames (bufs[i][offset:]) coalescing runs of one TCP
// flow, and with USO runs of one UDP flow; every other frame goes out alone
// with an empty header.
func (d *fileDevice) writeVnet(bufs [][]byte, offset int) (int, error) {
	var zero [vnetHdrLen]byte
	var segArr [groMaxSegs]seg // on the stack: Write may run concurrently
	segs := segArr[:0]
	written := 0
	var lastErr error
	for i := 0; i < len(bufs); {
		f := bufs[i][offset:]
		s, ok := parseTCP(f)
		j, udp := i+1, false
		if ok && validTCP(f, &s) && s.flags&tcpPSH == 0 {
			segs = append(segs[:0], s)
			size, mss := s.end-s.l3, s.end-s.hdr
			prevPayload := mss
			for j < len(bufs) && j-i < groMaxSegs && prevPayload == mss {
				g := bufs[j][offset:]
				t, ok := parseTCP(g)
				if !ok || t.end-t.hdr > mss || size+t.end-t.hdr > groMaxSize ||
					!canFollow(bufs[j-1][offset:], &segs[len(segs)-1], prevPayload, g, &t) || !validTCP(g, &t) {
					break
				}
				segs = append(segs, t)
				size += t.end - t.hdr
				prevPayload = t.end - t.hdr
				j++
				if t.flags&tcpPSH != 0 {
					break
				}
			}
		} else if d.uso {
			if u, ok := parseUDP(f); ok && validUDP(f, &u) {
				j, segs = udpRun(bufs, offset, i, u, segs)
				udp = true
			}
		}
		var err error
		if j-i > 1 && segs[0].hdr <= maxMergeHdr {
			// One write gathers the merged headers and the payloads
			// where they lie: no copy.
			var h [vnetHdrLen + maxMergeHdr]byte
			var n int
			if udp {
				n = mergeUDP(h[:], bufs[i:j], offset, segs)
			} else {
				n = mergeTCP(h[:], bufs[i:j], offset, segs)
			}
			var parts [groMaxSegs + 1][]byte
			ps := append(parts[:0], h[:n])
			for k := range segs {
				ps = append(ps, bufs[i+k][offset+segs[k].hdr:offset+segs[k].end])
			}
			err = d.writev(ps...)
		} else {
			j = i + 1
			err = d.writev(zero[:], f)
		}
		if err == nil {
			written += j - i
		} else {
			lastErr = err
		}
		i = j
	}
	return written, lastErr
}

// writev writes one frame gathered from parts (a header, then the frame
// or its pieces).
func (d *fileDevice) writev(parts ...[]byte) error {
	w := writers.Get().(*oneWrite)
	defer writers.Put(w)
	k := 0
	for _, p := range parts {
		if len(p) > 0 && k < len(w.iovs) {
			w.iovs[k].Base = &p[0]
			w.iovs[k].SetLen(len(p))
			k++
		}
	}
	w.k = k
	err := d.rc.Write(w.fn)
	clear(w.iovs[:k]) // keep no references to the caller's buffers
	if err != nil {
		return err
	}
	return w.err
}

// oneWrite is one writev(2) through the poller's fd reference, with its
// iovecs: pooled, because writes to one device may come from several
// goroutines, and so allocation-free.
type oneWrite struct {
	iovs [groMaxSegs + 2]unix.Iovec
	k    int
	err  error
	fn   func(uintptr) bool
}

var writers = sync.Pool{New: func() any { w := &oneWrite{}; w.fn = w.write; return w }}

func (w *oneWrite) write(fd uintptr) bool {
	for {
		_, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iovs[0])), uintptr(w.k))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until writable
		}
		w.err = nil
		if e != 0 {
			w.err = e
		}
		return true
	}
}
