package dataplane

import "github.com/l2tpu/l2tpu/tap"

// The transmit direction: frames the kernel sends on a session's TAP
// (queue) are encapsulated in place and sent into the tunnel, one batch per
// turn of the session's loop (loop.go).

// send serves one batch of queue q, read into b: how many frames it sent,
// and whether more may be waiting.
func (s *session) send(q tap.Device, b *batch) result {
	if q == s.dev {
		if !s.rdMu.TryLock() {
			// The turnaround is reading it (another loop): this turn
			// is its; try again next round rather than wait.
			return result{more: true}
		}
		defer s.rdMu.Unlock()
	}
	n, _ := q.Read(b.bufs, b.sizes, headroom)
	if n > 0 {
		s.transmit(b, n)
	}
	return result{frames: n, more: n == len(b.bufs)}
}

// transmit encapsulates n frames of b (at headroom) in place and sends them
// (l2tp_xmit_skb): counters as the kernel keeps them, bytes = header + frame.
func (s *session) transmit(b *batch, n int) {
	if len(s.queues) > 1 && s.seq.SendSeq() {
		s.txMu.Lock()
		defer s.txMu.Unlock()
	}
	h := s.tx.Len()
	off := headroom - h
	var bytes uint64
	for i := 0; i < n; i++ {
		var l2ss uint32
		if s.hasL2S {
			l2ss = s.seq.NextSublayer()
		}
		s.tx.Put(b.bufs[i][off:], l2ss)
		b.out[i] = b.bufs[i][:headroom+b.sizes[i]]
		bytes += uint64(h + b.sizes[i])
	}
	sent, _ := s.t.conn.WriteBatch(b.out[:n], off)
	if sent < n {
		// Frames of one batch are alike: charge the failed ones their
		// average size.
		bytes = bytes * uint64(sent) / uint64(n)
		s.stats.txErrors.Add(uint64(n - sent))
		s.t.stats.txErrors.Add(uint64(n - sent))
	}
	s.stats.txPackets.Add(uint64(sent))
	s.stats.txBytes.Add(bytes)
	s.t.stats.txPackets.Add(uint64(sent))
	s.t.stats.txBytes.Add(bytes)
}
