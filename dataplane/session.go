package dataplane

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/tap"
)

// session is one pseudowire: a TAP device and its L2TP state.
type session struct {
	m       *Manager
	cfg     SessionConfig
	t       *tunnel
	ifname  atomic.Pointer[string] // follows renames
	ifindex int
	mtu     int          // at creation
	dev     tap.Device   // queue 0: frames received from the tunnel are written here
	queues  []tap.Device // every queue, each with its transmit loop
	tx      encap.TxHeader
	rx      encap.RxHeader
	hasL2S  bool

	// maxFrame is MTU+18: longer frames are dropped, as by l2tp_eth
	// (dev_forward_skb). The other half of that check, the interface
	// being up, the TUN driver makes itself: it refuses writes (EIO) to a
	// down interface, synchronously, as the kernel does.
	maxFrame atomic.Int64

	rxMu  sync.Mutex // serialises sequenced receive and the reorder timer
	seq   *encap.Seq[*held]
	timer *time.Timer

	// txMu keeps numbering and sending in one order when several queues
	// transmit a sequenced session: a peer drops what arrives out of
	// sequence.
	txMu  sync.Mutex
	loops atomic.Int32 // transmit loops running

	// rdMu is held while queue 0 is read: by its transmit loop, or right
	// after a write by the receive path (turnaround).
	rdMu sync.Mutex

	stats counters
	done  chan struct{} // closed when the last transmit loop ends
}

func (s *session) name() string { return *s.ifname.Load() }

func (s *session) setMTU(mtu int) { s.maxFrame.Store(int64(encap.MaxRxFrame(mtu))) }

// startTx starts a transmit loop per queue.
func (s *session) startTx() {
	s.loops.Store(int32(len(s.queues)))
	for _, q := range s.queues {
		go s.txLoop(q)
	}
}

// txLoop moves frames the kernel transmits on one TAP queue into the
// tunnel.
func (s *session) txLoop(q tap.Device) {
	defer func() {
		if s.loops.Add(-1) == 0 {
			close(s.done)
		}
	}()
	for {
		if err := q.WaitRead(); err != nil {
			return
		}
		if q == s.dev {
			s.rdMu.Lock()
		}
		b := s.m.getBatch()
		n, err := q.Read(b.bufs, b.sizes, headroom)
		if n > 0 {
			s.transmit(b, n)
		}
		s.m.putBatch(b)
		if q == s.dev {
			s.rdMu.Unlock()
		}
		if err != nil && errors.Is(err, os.ErrClosed) {
			return
		}
	}
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
// L2TP counter); so does a down interface (the TUN driver refuses).
func (s *session) deliver(bufs [][]byte, off int) {
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
			s.turnaround()
		}
	}
}

// turnaround reads what the stack sent in answer to frames just written to
// the TAP (an echo reply, an ACK: the stack answers in the write itself)
// and transmits it at once, in the writer's thread: no wake-up of the
// transmit loop on the critical path.
func (s *session) turnaround() {
	if !s.rdMu.TryLock() {
		return // the transmit loop is reading
	}
	defer s.rdMu.Unlock()
	b := s.m.getBatch()
	defer s.m.putBatch(b)
	for {
		n, _ := s.dev.Read(b.bufs, b.sizes, headroom)
		if n > 0 {
			s.m.turnHits.Add(uint64(n))
			s.transmit(b, n)
		}
		// A full batch may have left part of a super-frame in the
		// device: no readiness event will come for it (the fd itself may
		// be empty), so it is sent here, up to the queue's end.
		if n < len(b.bufs) {
			return
		}
	}
}

func (s *session) deliverOne(frame []byte) {
	one := [1][]byte{frame}
	s.deliver(one[:], 0)
}

// stop ends the session: TAP closed (or removed), loop finished, held
// packets purged (each rx_errors, as the kernel's purge).
func (s *session) stop(remove bool) {
	if remove {
		s.dev.Remove()
	} else {
		s.dev.Close()
	}
	for _, q := range s.queues[1:] {
		q.Close()
	}
	<-s.done
	s.rxMu.Lock()
	defer s.rxMu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
	}
	for {
		h, ok := s.seq.Purge()
		if !ok {
			break
		}
		s.stats.rxErrors.Add(1)
		s.m.putHeld(h)
	}
}
