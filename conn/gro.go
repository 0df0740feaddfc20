package conn

import (
	"encoding/binary"
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// UDP GRO on receive: the kernel hands over runs of datagrams from one
// sender coalesced into one buffer (up to 64 KiB) with the segment size in
// a UDP_GRO control message; readGRO splits them back into messages, handed
// out in place (no copy) as slices of that buffer. The large buffers come
// from a pool shared by all sockets and are held only while a read is being
// handed out and used, so idle tunnels cost nothing.

const (
	groBufSize = 65536
	groBatch   = 8
	// GROHeadroom is the largest offset ReadBatch serves in place: each
	// coalesced read lands this far into its buffer, so every message has
	// that much of the buffer (the previous message's tail) before it.
	GROHeadroom = 64
)

type groBufs struct {
	bufs [groBatch][]byte
	oobs [groBatch][]byte
	msgs [groBatch]Message
	iovs [groBatch][1][]byte
	got  int // messages received
	msg  int // message being split
	off  int // offset in it
}

var groPool = sync.Pool{New: func() any {
	g := &groBufs{}
	for i := range g.bufs {
		g.bufs[i] = make([]byte, GROHeadroom+groBufSize)
		g.oobs[i] = make([]byte, unix.CmsgSpace(4))
	}
	return g
}}

// groSegment reads the UDP_GRO segment size from a control message buffer
// (0 when absent: the datagram is one message).
func groSegment(oob []byte) int {
	for len(oob) >= unix.CmsgLen(0) {
		h := (*unix.Cmsghdr)(unsafePointer(oob))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):]))
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return 0
}

// readGRO is ReadBatch for a socket with UDP_GRO on. Messages are handed
// out in place (bufs[i] replaced) when offset <= GROHeadroom, copied
// otherwise.
func (s *sock) readGRO(bufs [][]byte, sizes []int, offset int) (int, error) {
	if s.groDone != nil {
		// The caller is done with what the last call lent it.
		groPool.Put(s.groDone)
		s.groDone = nil
	}
	g := s.gro
	if g == nil {
		g = groPool.Get().(*groBufs)
		for i := range g.msgs {
			g.iovs[i][0] = g.bufs[i][GROHeadroom:]
			g.msgs[i].Buffers = g.iovs[i][:]
			g.msgs[i].OOB = g.oobs[i]
		}
		got, err := s.bc.ReadBatch(g.msgs[:], unix.MSG_DONTWAIT)
		if err != nil || got == 0 {
			groPool.Put(g)
			s.drained.Store(true)
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				return 0, err
			}
			return 0, nil
		}
		g.got, g.msg, g.off = got, 0, 0
		s.drained.Store(got < groBatch)
		s.gro = g
	}
	n := 0
	inPlace := offset <= GROHeadroom
	for n < len(bufs) && g.msg < g.got {
		m := &g.msgs[g.msg]
		data := g.bufs[g.msg][GROHeadroom : GROHeadroom+m.N]
		seg := groSegment(m.OOB[:m.NN])
		if seg <= 0 || m.Flags&unix.MSG_TRUNC != 0 {
			seg = len(data)
		}
		if m.Flags&unix.MSG_TRUNC != 0 {
			sizes[n] = 0 // never deliver a cut message
			n++
			g.msg, g.off = g.msg+1, 0
			continue
		}
		end := min(g.off+seg, len(data))
		if inPlace {
			// offset bytes before the message are the buffer's: the
			// headroom or the previous message's tail. The capacity
			// ends with the message, so appends cannot touch the next.
			b := g.bufs[g.msg]
			bufs[n] = b[GROHeadroom+g.off-offset : GROHeadroom+end : GROHeadroom+end]
			sizes[n] = end - g.off
		} else if end-g.off <= len(bufs[n])-offset {
			sizes[n] = copy(bufs[n][offset:], data[g.off:end])
		} else {
			sizes[n] = 0 // larger than the caller's buffer: never deliver a cut message
		}
		n++
		g.off = end
		if g.off >= len(data) {
			g.msg, g.off = g.msg+1, 0
		}
	}
	if g.msg >= g.got {
		s.gro = nil
		if inPlace {
			s.groDone = g // lent until the next read
		} else {
			groPool.Put(g)
		}
	} else {
		s.drained.Store(false) // more to hand out without waiting
	}
	return n, nil
}
