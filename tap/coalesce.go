package tap

import (
	"encoding/binary"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Coalescing, on write (GRO in userspace): runs of consecutive frames of
// one TCP flow, and with USO of one UDP flow, go to the TAP as one GSO
// super-frame, so the stack above takes one packet where it would take
// dozens. The payloads are gathered by the write where they lie.

// writeVnet writes frames (bufs[i][offset:]) coalescing runs of one flow;
// every other frame goes out alone with an empty header.
func (d *fileDevice) writeVnet(bufs [][]byte, offset int) (int, error) {
	var zero [vnetHdrLen]byte
	var segArr [gsoMaxSegs]seg // on the stack: Write may run concurrently
	written := 0
	var lastErr error
	for i := 0; i < len(bufs); {
		f := bufs[i][offset:]
		j := i + 1
		var segs []seg
		if s, ok := parse(f); ok && (s.t.stream || d.uso) && s.mergeable(f) {
			j, segs = run(bufs, offset, i, s, segArr[:0])
		}
		var err error
		if j-i > 1 {
			var h [vnetHdrLen + maxMergeHdr]byte
			n := merge(h[:], f, segs)
			var parts [gsoMaxSegs + 1][]byte
			ps := append(parts[:0], h[:n])
			for k := range segs {
				ps = append(ps, bufs[i+k][offset+segs[k].hdr:offset+segs[k].end])
			}
			err = d.writev(ps...)
		} else {
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

// run returns the end j of the run of frames from bufs[i] (parsed as s,
// mergeable) that may go out as one super-frame, and their parses in segs.
// A run is a flow's frames back to back, all as long as the first but the
// last (a shorter one, or a TCP PSH, ends it), within the IP length and
// gsoMaxSegs; every frame in a run of two or more has a valid checksum.
func run(bufs [][]byte, offset, i int, s seg, segs []seg) (int, []seg) {
	segs = append(segs[:0], s)
	if s.t.stream && s.flags&tcpPSH != 0 {
		return i + 1, segs
	}
	mss, total := s.payload(), s.end-s.l3
	j := i + 1
	for ; j < len(bufs) && j-i < gsoMaxSegs; j++ {
		a, b := bufs[j-1][offset:], bufs[j][offset:]
		sa := &segs[len(segs)-1]
		t, ok := parse(b)
		n := t.payload()
		if !ok || n > mss || total+n > gsoMaxSize || !follows(a, sa, b, &t) || !t.mergeable(b) || !csumOK(b, &t) ||
			(j == i+1 && !csumOK(a, sa)) {
			break
		}
		segs = append(segs, t)
		total += n
		if n < mss || t.flags&tcpPSH != 0 {
			j++
			break
		}
	}
	return j, segs
}

// follows reports whether frame b continues a's flow: the same Ethernet
// and IP headers but for lengths, checksum and the IPv4 ID, which counts
// up as segmentation will count it (or means nothing under DF, RFC 6864);
// the same transport header but for the bytes a flow varies in; and for TCP
// the next sequence number and the same flags but PSH.
func follows(a []byte, sa *seg, b []byte, sb *seg) bool {
	if sa.t != sb.t || sa.l4 != sb.l4 || sa.hdr != sb.hdr || sa.v6 != sb.v6 || string(a[:sa.l3]) != string(b[:sb.l3]) {
		return false
	}
	l3 := sa.l3
	if sa.v6 {
		// version, class, flow label; next header, hop limit, addresses
		if string(a[l3:l3+4]) != string(b[l3:l3+4]) || string(a[l3+6:l3+40]) != string(b[l3+6:l3+40]) {
			return false
		}
	} else {
		// TOS; flags; TTL, protocol; addresses
		const df = 0x40
		if a[l3+1] != b[l3+1] || a[l3+6] != b[l3+6] || string(a[l3+8:l3+10]) != string(b[l3+8:l3+10]) ||
			string(a[l3+12:l3+20]) != string(b[l3+12:l3+20]) ||
			a[l3+6]&df == 0 && binary.BigEndian.Uint16(b[l3+4:]) != binary.BigEndian.Uint16(a[l3+4:])+1 {
			return false
		}
	}
	from := sa.l4
	for _, v := range sa.t.vary {
		if string(a[from:sa.l4+v[0]]) != string(b[from:sb.l4+v[0]]) {
			return false
		}
		from = sa.l4 + v[1]
	}
	if string(a[from:sa.hdr]) != string(b[from:sb.hdr]) {
		return false
	}
	return !sa.t.stream || sb.seq == sa.seq+uint32(sa.payload()) && sa.flags&^tcpPSH == sb.flags&^tcpPSH
}

// merge writes into h the virtio_net_hdr and the headers of one super-frame
// made of the frames parsed in segs, f the first: f's headers with the
// merged lengths, PSH if any had it, and the checksum left to the kernel
// (NEEDS_CSUM: the field holds the pseudo-header sum; the kernel completes
// it, and each segment's, if it resegments). The payloads follow
// unchanged. It returns len(h) used.
func merge(h []byte, f []byte, segs []seg) int {
	s := &segs[0]
	end := s.hdr
	var flags byte
	for i := range segs {
		end += segs[i].payload()
		flags |= segs[i].flags & tcpPSH
	}
	o := vnetHdrLen + copy(h[vnetHdrLen:], f[:s.hdr])
	frame := h[vnetHdrLen:o]
	fixHeaders(frame, s, end, 0)
	if s.t.stream {
		frame[s.l4+13] |= flags
	}
	binary.BigEndian.PutUint16(frame[s.l4+s.t.csum:], fold(pseudo(frame, s, end-s.l4)))
	h[0], h[1] = vnetFlagNeedsCsum, s.t.gso(s.v6)
	binary.NativeEndian.PutUint16(h[2:], uint16(s.hdr))       // hdr_len
	binary.NativeEndian.PutUint16(h[4:], uint16(s.payload())) // gso_size
	binary.NativeEndian.PutUint16(h[6:], uint16(s.l4))        // csum_start
	binary.NativeEndian.PutUint16(h[8:], uint16(s.t.csum))    // csum_offset
	return o
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
	// Through the fd's reference, not its write lock: writers of
	// several threads share a device, and a TAP write never waits.
	err := d.rc.Control(w.fn)
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
	iovs [gsoMaxSegs + 2]unix.Iovec
	k    int
	err  error
	fn   func(uintptr)
}

var writers = sync.Pool{New: func() any { w := &oneWrite{}; w.fn = w.write; return w }}

func (w *oneWrite) write(fd uintptr) {
	for {
		_, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iovs[0])), uintptr(w.k))
		if e == unix.EINTR {
			continue
		}
		w.err = nil
		if e != 0 {
			w.err = e // EAGAIN too: the TUN driver takes a frame or refuses it at once
		}
		return
	}
}
