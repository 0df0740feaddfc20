package dataplane

import (
	"errors"
	"net"
	"os"

	"github.com/l2tpu/l2tpu/conn"
	"github.com/l2tpu/l2tpu/encap"
)

// tunnel is one L2TP tunnel: its socket and its sessions.
type tunnel struct {
	cfg      TunnelConfig
	conn     conn.Conn
	sessions atomicMap[uint32, *session] // lock-free lookup
	stats    counters
	done     chan struct{} // closed when the receive loop ends (UDP)
	// noAddr: the local address is on no interface of the namespace, so
	// the tunnel can neither send nor receive; its sessions' carrier is
	// off. Under the Manager's lock.
	noAddr bool
}

func (t *tunnel) lookup(id uint32) *session {
	return t.sessions.get(id)
}

// rxLoop reads a UDP tunnel's socket. IP-encap tunnels have no loop of their
// own: their packets arrive on the namespace-wide listener.
func (t *tunnel) rxLoop(m *Manager) {
	defer close(t.done)
	m.readLoop(t.conn, encap.EncapUDP, t)
}

// readLoop serves one socket until it is closed.
func (m *Manager) readLoop(r conn.Reader, e encap.Encap, t *tunnel) {
	for {
		if err := r.WaitRead(); err != nil {
			return
		}
		b := m.getBatch()
		n, err := r.ReadBatch(b.bufs, b.sizes, headroom)
		if n > 0 {
			m.receive(e, t, b, n)
		}
		b.restore()
		m.putBatch(b)
		if err != nil {
			if errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) {
				return
			}
			// ECONNREFUSED and the like: an ICMP error reported once on
			// the connected socket. The tunnel stays up, as the kernel's.
			m.log.Debug("tunnel socket error", "err", err)
		}
	}
}

// receive classifies a batch of L2TP messages (at headroom in b) and
// delivers the frames, consecutive frames of one session in one write.
// t is the receiving tunnel for UDP, nil for IP encapsulation.
func (m *Manager) receive(e encap.Encap, t *tunnel, b *batch, n int) {
	now := m.now()
	var run *session
	runOff, k := 0, 0
	flush := func() {
		if run != nil && k > 0 {
			run.deliver(b.out[:k], runOff)
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
}
