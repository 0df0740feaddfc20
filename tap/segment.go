package tap

import (
	"encoding/binary"
	"sync"

	"golang.org/x/sys/unix"
)

// Segmentation, on read: with offloads on, the stack above the TAP hands
// over TCP and UDP super-frames of up to 64 KiB, and frames whose checksum
// is left to the device (NEEDS_CSUM). Read finishes both, so callers still
// get whole, checksummed, MTU-sized frames, at one read per super-frame.

// superSize holds the largest frame the TUN driver hands over: an IP packet
// of 64 KiB behind an Ethernet header and two VLAN tags, or a plain frame
// of the largest MTU.
const superSize = vnetHdrLen + max(gsoMaxSize+14+8, MaxFrame)

var superPool = sync.Pool{New: func() any { b := make([]byte, superSize); return &b }}

// superFrame is a super-frame being handed out segment by segment.
type superFrame struct {
	buf  *[]byte // from superPool; nil when idle
	n    int     // frame length (after the virtio header)
	seg  seg
	mss  int
	next int // payload offset of the next segment
	k    int // its index
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
			d.idle.Store(true)
			return n, rerr
		}
		if m > len(*bp) || m < vnetHdrLen { // cut (see Read) or no header
			superPool.Put(bp)
			continue
		}
		b := (*bp)[:m]
		flags, gso := b[0], b[1]&^vnetGSOECN
		gsoSize := int(binary.NativeEndian.Uint16(b[4:]))
		f := b[vnetHdrLen:]
		if gso == vnetGSONone {
			cstart := int(binary.NativeEndian.Uint16(b[6:]))
			coff := int(binary.NativeEndian.Uint16(b[8:]))
			ok := flags&vnetFlagNeedsCsum == 0 || completeCsum(f, cstart, coff)
			// Longer than any MTU: never deliver a cut frame.
			if ok && len(f) <= len(bufs[n])-offset {
				sizes[n] = copy(bufs[n][offset:], f)
				n++
			}
			superPool.Put(bp)
			continue
		}
		s, ok := parse(f)
		if t := byGSO(gso); !ok || s.t != t || gsoSize <= 0 || s.hdr+gsoSize > len(bufs[n])-offset {
			// Not what the offload promises (or UFO, never negotiated),
			// or segments longer than the caller's buffers: drop.
			superPool.Put(bp)
			continue
		}
		d.super = superFrame{buf: bp, n: len(f) + vnetHdrLen, seg: s, mss: gsoSize, next: s.hdr + vnetHdrLen}
	}
	d.idle.Store(false)
	return n, nil
}

// emit writes segments of the pending super-frame into bufs: its headers,
// fixed for each segment, and gso_size bytes of payload.
func (t *superFrame) emit(bufs [][]byte, sizes []int, offset int) int {
	f := (*t.buf)[vnetHdrLen:t.n]
	s := &t.seg
	n := 0
	for n < len(bufs) && t.next < t.n {
		start := t.next - vnetHdrLen
		end := min(start+t.mss, len(f))
		out := bufs[n][offset:]
		h := copy(out, f[:s.hdr])
		seg := out[:h+copy(out[h:], f[start:end])]
		fixHeaders(seg, s, len(seg), t.k)
		if s.t.stream {
			fl := s.l4 + 13
			binary.BigEndian.PutUint32(seg[s.l4+4:], s.seq+uint32(t.k*t.mss))
			if end != len(f) {
				seg[fl] &^= tcpFIN | tcpPSH // the last segment's
			}
			if t.k > 0 {
				seg[fl] &^= tcpCWR // the first segment's
			}
		}
		putL4Csum(seg, s)
		sizes[n] = len(seg)
		n++
		t.next += end - start
		t.k++
	}
	return n
}
