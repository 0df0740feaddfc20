package tap

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// TSO on read: with TUNSETOFFLOAD(CSUM|TSO4|TSO6, USO4|USO6 where the kernel
// has them) the stack above the TAP hands over TCP and UDP super-frames of
// up to 64 KiB, and frames whose checksum is left to the device
// (NEEDS_CSUM). Read finishes both, so callers still get whole, checksummed,
// MTU-sized frames, at one read per super-frame.

// TUN offload flags (linux/if_tun.h).
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
	tunFUSO4 = 0x20 // Linux 6.2
	tunFUSO6 = 0x40
)

// setOffload turns on checksum offload, TSO and, where the kernel has it
// (6.2 on; older ones refuse unknown flags with EINVAL), USO. It reports
// whether USO is on: only then do writes carry coalesced UDP.
func setOffload(fd int) (uso bool, err error) {
	base := tunFCsum | tunFTSO4 | tunFTSO6
	if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, base|tunFUSO4|tunFUSO6) == nil {
		return true, nil
	}
	return false, unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, base)
}

// superFrame is a super-frame being handed out segment by segment.
type superFrame struct {
	buf  *[]byte // from superPool; nil when idle
	n    int     // frame length (after the virtio header)
	seg  seg
	mss  int
	next int // payload offset of the next segment
	k    int // its index
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

// readOffload is Read for a device with offloads on.
func (d *fileDevice) readOffload(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	var rerr error
	for n < len(bufs) {
		if d.super.buf != nil {
			n += d.super.emit(bufs[n:], sizes[n:], offset)
			if d.super.next >= d.super.n {
				superPool.Put(d.super.buf)
				d.super.buf = nil
			}
			continue
		}
		bp := superPool.Get().(*[]byte)
		m, err := d.read(*bp)
		if err != nil {
			superPool.Put(bp)
			if err != unix.EAGAIN {
				rerr = err
			}
			d.drained = true
			return n, rerr
		}
		if m > len(*bp) || m < vnetHdrLen { // cut (see Read) or no header
			superPool.Put(bp)
			continue
		}
		b := (*bp)[:m]
		flags, gso := b[0], b[1]&^0x80 // ECN bit
		cstart := int(binary.NativeEndian.Uint16(b[6:]))
		coff := int(binary.NativeEndian.Uint16(b[8:]))
		gsoSize := int(binary.NativeEndian.Uint16(b[4:]))
		f := b[vnetHdrLen:]
		switch gso {
		case vnetGSONone:
			if flags&vnetFlagNeedsCsum != 0 && !completeCsum(f, cstart, coff) {
				superPool.Put(bp)
				continue
			}
			if len(f) > len(bufs[n])-offset {
				superPool.Put(bp) // longer than any MTU: never deliver a cut frame
				continue
			}
			sizes[n] = copy(bufs[n][offset:], f)
			n++
			superPool.Put(bp)
		case vnetGSOTCPv4, vnetGSOTCPv6, vnetGSOUDPL4:
			var s seg
			var ok bool
			if gso == vnetGSOUDPL4 {
				s, ok = parseUDPSuper(f)
			} else {
				s, ok = parseTCPSuper(f)
			}
			if !ok || gsoSize <= 0 {
				superPool.Put(bp) // not what the offload promises: drop
				continue
			}
			d.super = superFrame{buf: bp, n: len(f) + vnetHdrLen, seg: s, mss: gsoSize, next: s.hdr + vnetHdrLen}
		default: // UFO and the like are not negotiated
			superPool.Put(bp)
		}
	}
	d.drained = false
	return n, nil
}

// parseTCPSuper parses a TSO super-frame's headers: parseTCPAny's rules (the
// TCP flags are kept, on the right segments).
func parseTCPSuper(f []byte) (seg, bool) {
	s, ok := parseTCPAny(f)
	return s, ok && s.hdr <= maxMergeHdr
}

// emit writes segments of the pending super-frame into bufs.
func (t *superFrame) emit(bufs [][]byte, sizes []int, offset int) int {
	f := (*t.buf)[vnetHdrLen:t.n]
	s := &t.seg
	n := 0
	for n < len(bufs) && t.next < t.n {
		start := t.next - vnetHdrLen
		end := min(start+t.mss, len(f))
		last := end == len(f)
		out := bufs[n][offset:]
		h := copy(out, f[:s.hdr])
		l := copy(out[h:], f[start:end])
		seg := out[:h+l]
		l3, l4 := s.l3, s.l4
		if s.v6 {
			binary.BigEndian.PutUint16(seg[l3+4:], uint16(len(seg)-l3-40))
		} else {
			binary.BigEndian.PutUint16(seg[l3+2:], uint16(len(seg)-l3))
			binary.BigEndian.PutUint16(seg[l3+4:], binary.BigEndian.Uint16(f[l3+4:])+uint16(t.k))
			seg[l3+10], seg[l3+11] = 0, 0
			binary.BigEndian.PutUint16(seg[l3+10:], ^fold(checksum(0, seg[l3:l3+20])))
		}
		if s.proto == unix.IPPROTO_UDP {
			binary.BigEndian.PutUint16(seg[l4+4:], uint16(len(seg)-l4))
			seg[l4+6], seg[l4+7] = 0, 0
			c := ^fold(checksum(pseudo(seg, s, len(seg)-l4), seg[l4:]))
			if c == 0 {
				c = 0xffff // 0 would mean no checksum
			}
			binary.BigEndian.PutUint16(seg[l4+6:], c)
		} else {
			binary.BigEndian.PutUint32(seg[l4+4:], s.seq+uint32(t.k*t.mss))
			if !last {
				seg[l4+13] &^= tcpFIN | tcpPSH
			}
			if t.k > 0 {
				seg[l4+13] &^= tcpCWR
			}
			seg[l4+16], seg[l4+17] = 0, 0
			binary.BigEndian.PutUint16(seg[l4+16:], ^fold(checksum(pseudo(seg, s, len(seg)-l4), seg[l4:])))
		}
		sizes[n] = len(seg)
		n++
		t.next += end - start
		t.k++
	}
	return n
}
