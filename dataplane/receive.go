package dataplane

import (
	"errors"
	"net"
	"os"
	"time"

	"github.com/l2tpu/l2tpu/conn"
	"github.com/l2tpu/l2tpu/encap"
)

// The receive direction: messages read from a tunnel socket (or, for IP
// encapsulation, the namespace's listener) are classified, checked as
// l2tp_recv_common checks them and written to their sessions' TAPs, one
// batch per turn of the socket's loop (loop.go).

// receiveFrom serves one batch of r. t is the receiving tunnel for UDP,
// nil for IP encapsulation.
func (m *Manager) receiveFrom(tn *turn, r conn.Reader, e encap.Encap, t *tunnel) result {
	b := tn.rx
	n, err := r.ReadBatch(b.bufs, b.sizes, headroom)
	sessions := 0
	if n > 0 {
		sessions = m.receive(tn, e, t, b, n)
	}
	b.restore()
	if err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, net.ErrClosed) {
		// ECONNREFUSED and the like: an ICMP error reported once on
		// the connected socket. The tunnel stays up, as the kernel's.
		m.log.Debug("tunnel socket error", "err", err)
	}
	return result{frames: n, more: n == len(b.bufs), sessions: sessions}
}

// receive classifies a batch of L2TP messages (at headroom in b) and
// delivers the frames, consecutive frames of one session in one write.
// t is the receiving tunnel for UDP, nil for IP encapsulation. It returns
// how many sessions brought frames that had not yet in the loop's round.
func (m *Manager) receive(tn *turn, e encap.Encap, t *tunnel, b *batch, n int) (sessions int) {
	now := m.now()
	var run *session
	runOff, k := 0, 0
	flush := func() {
		if run != nil && k > 0 {
			run.deliver(b.out[:k], runOff, tn.tx)
		}
		k = 0
	}
	for i := 0; i < n; i++ {
		msg := b.bufs[i][headroom : headroom+b.sizes[i]]
		sid, ver, r := encap.Peek(e, msg)
		if r != encap.OK {
			continue // short, control, L2TPv2: not ours, no counter
		}
		var s *session
		if t != nil {
			s = t.lookup(sid)
		} else {
			s = m.ipSessions.get(sid)
		}
		if s == nil {
			continue // unknown session: no counter
		}
		if s.seen != tn.round {
			s.seen = tn.round
			sessions++
		}
		d, r := s.rx.Decode(msg, ver)
		switch r {
		case encap.OK:
		case encap.Invalid:
			s.t.stats.rxInvalid.Add(1)
			continue
		case encap.CookieMismatch:
			s.stats.rxCookieDiscards.Add(1)
			s.stats.rxErrors.Add(1)
			continue
		default: // Truncated (IP): discarded without a counter
			continue
		}
		if d.HasSeq && s.cfg.ReorderTimeout > 0 && run == s {
			flush() // this session's earlier frames go out first
		}
		if !s.accept(d, msg, now) {
			continue
		}
		s.countRx(len(msg))
		off := headroom + d.Offset
		if s != run || off != runOff {
			flush()
			run, runOff = s, off
		}
		b.out[k] = b.bufs[i][:headroom+len(msg)]
		k++
	}
	flush()
	return sessions
}

// accept runs the sequence rules on a decoded message (l2tp_recv_common
// from the sublayer on) and reports whether the caller should deliver it.
// With reordering, sequenced packets are delivered (or held, copied, and
// released in order) here, under the session's lock.
func (s *session) accept(d encap.Data, msg []byte, now int64) bool {
	if !d.HasSeq && s.seq.RecvSeq() {
		s.stats.rxSeqDiscards.Add(1)
		s.stats.rxErrors.Add(1)
		return false
	}
	if !d.HasSeq && !s.seq.SendSeq() {
		return true // the common unsequenced case needs no lock
	}
	s.rxMu.Lock()
	defer s.rxMu.Unlock()
	var h *held
	if d.HasSeq && s.cfg.ReorderTimeout > 0 {
		h = s.m.getHeld()
	}
	v, oos := s.seq.Receive(d, h, now)
	if oos {
		s.stats.rxOOSPackets.Add(1)
	}
	switch v {
	case encap.Deliver:
		if h != nil {
			s.m.putHeld(h)
		}
		if s.cfg.ReorderTimeout > 0 {
			// Written here, under the lock, so that it cannot be
			// overtaken by packets the timer releases.
			s.countRx(len(msg))
			s.deliverOne(msg[d.Offset:])
			return false
		}
		return true
	case encap.Queued:
		h.hold(msg[d.Offset:], len(msg))
		s.releaseLocked(now)
		return false
	case encap.DropSeq:
		s.stats.rxSeqDiscards.Add(1)
	}
	if h != nil {
		s.m.putHeld(h)
	}
	s.stats.rxErrors.Add(1)
	return false
}

// releaseLocked delivers what the reorder buffer lets go and arms the timer
// for the rest.
func (s *session) releaseLocked(now int64) {
	for {
		h, v, ok := s.seq.Next(now)
		if !ok {
			break
		}
		if v == encap.Deliver {
			s.countRx(h.msgLen)
			s.deliverOne(h.frame)
		} else {
			s.stats.rxSeqDiscards.Add(1)
			s.stats.rxErrors.Add(1)
		}
		s.m.putHeld(h)
	}
	if dl, ok := s.seq.Deadline(); ok {
		d := time.Duration(dl - now)
		if s.timer == nil {
			s.timer = time.AfterFunc(d, s.onTimer)
		} else {
			s.timer.Reset(d)
		}
	}
}

func (s *session) onTimer() {
	s.rxMu.Lock()
	defer s.rxMu.Unlock()
	s.releaseLocked(s.m.now())
}

func (s *session) countRx(msgLen int) {
	s.stats.rxPackets.Add(1)
	s.stats.rxBytes.Add(uint64(msgLen))
	s.t.stats.rxPackets.Add(1)
	s.t.stats.rxBytes.Add(uint64(msgLen))
}

// deliver writes frames (bufs[i][off:]) to the TAP after l2tp_eth's checks:
// shorter than an Ethernet header or longer than MTU+18 means dropped (no
// L2TP counter); so does a down interface (the TUN driver refuses). tx is
// the batch the turnaround reads the answers into (nil: one from the pool).
func (s *session) deliver(bufs [][]byte, off int, tx *batch) {
	limit := int(s.maxFrame.Load())
	k := 0
	for _, b := range bufs {
		if n := len(b) - off; n >= encap.EthHeaderLen && n <= limit {
			bufs[k] = b
			k++
		}
	}
	if k > 0 {
		s.dev.Write(bufs[:k], off)
		if !s.m.opt.NoTurnaround && len(s.queues) == 1 {
			s.turnaround(tx)
		}
	}
}

// turnaround reads what the stack sent in answer to frames just written to
// the TAP (an echo reply, an ACK: the stack answers in the write itself)
// and transmits it at once, in the writer's thread: no wake-up of the
// transmit side on the critical path. One batch, as any turn: the rest is
// the session's source's to send, in its next turn.
func (s *session) turnaround(b *batch) {
	if !s.rdMu.TryLock() {
		return // the session's source is reading
	}
	defer s.rdMu.Unlock()
	if b == nil {
		b = s.m.getBatch()
		defer s.m.putBatch(b)
	}
	n, _ := s.dev.Read(b.bufs, b.sizes, headroom)
	if n > 0 {
		s.m.turnHits.Add(uint64(n))
		s.transmit(b, n)
	}
	if n == len(b.bufs) {
		// Part of a super-frame may be left in the device with the fd
		// itself empty: no readiness event will come for it.
		s.srcs[0].kick()
	}
}

// deliverOne is deliver for the sequence rules' frames, which come from
// anywhere (a loop, a reorder timer): the turnaround takes a pooled batch.
func (s *session) deliverOne(frame []byte) {
	one := [1][]byte{frame}
	s.deliver(one[:], 0, nil)
}
