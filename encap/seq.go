package encap

import (
	"math"
	"sync/atomic"
	"time"
)

// Kernel constants of l2tp_session_create for L2TPv3.
const (
	// SeqWindow is nr_window_size: a sequence number is acceptable when
	// its forward distance from the expected one is below this (2^23-1).
	SeqWindow = SeqMask / 2
	// SeqOOSMax is nr_oos_count_max: after more than this many consecutive
	// out-of-sequence packets the receiver resynchronises to them.
	SeqOOSMax = 4
	// DefaultReorderCap is the reorder buffer's default capacity.
	DefaultReorderCap = 64
)

// SeqConfig is a session's sequencing configuration (ip l2tp's seq and
// reorder_timeout; LNSMode is not settable from ip l2tp and defaults to the
// kernel's LAC mode).
type SeqConfig struct {
	SendSeq        bool
	RecvSeq        bool
	LNSMode        bool
	ReorderTimeout time.Duration // 0: no reordering (the kernel's default)
	ReorderCap     int           // reorder buffer size; 0: DefaultReorderCap
}

// Verdict is what [Seq.Receive] decided for a packet.
type Verdict uint8

const (
	// Deliver the packet now (after anything Next returns).
	Deliver Verdict = iota
	// Queued in the reorder buffer; the caller loops Next.
	Queued
	// DropSeq: session rx_seq_discards and rx_errors.
	DropSeq
	// DropWindow: sequence number outside the window; session rx_errors
	// only, as in the kernel.
	DropWindow
)

func (v Verdict) String() string {
	switch v {
	case Deliver:
		return "deliver"
	case Queued:
		return "queued"
	case DropSeq:
		return "drop-seq"
	case DropWindow:
		return "drop-window"
	}
	return "verdict?"
}

type held[T any] struct {
	ns   uint32
	at   int64 // arrival, caller's clock in nanoseconds
	item T
}

// Seq is one session's sequence-number state, the kernel's l2tp_session
// fields send_seq, recv_seq, ns, nr, nr_oos, nr_oos_count, reorder_skip and
// reorder queue. T is whatever the caller holds a queued packet by.
//
// The transmit side (SendSeq, NextSublayer) may be used concurrently with
// the receive side; the receive side (Receive, Next, Purge) must be
// serialised by the caller.
type Seq[T any] struct {
	sendSeq atomic.Bool
	ns      atomic.Uint32

	recvSeq bool
	lns     bool
	started bool // a sequenced packet was accepted since creation
	skip    bool // reorder_skip: take the next sequenced packet's ns as nr
	nr      uint32
	nrOOS   uint32
	oosRun  uint32

	timeout int64     // reorder timeout in ns; 0 = no reordering
	q       []held[T] // sorted by forward distance from nr; len < cap(q)
	oldest  int64     // earliest arrival in q
}

// NewSeq returns the state of a new session. Only a session with a reorder
// timeout gets a (bounded) buffer.
func NewSeq[T any](c SeqConfig) *Seq[T] {
	s := &Seq[T]{recvSeq: c.RecvSeq, lns: c.LNSMode, skip: true, timeout: int64(c.ReorderTimeout)}
	s.sendSeq.Store(c.SendSeq)
	if s.timeout > 0 {
		n := c.ReorderCap
		if n <= 1 {
			n = DefaultReorderCap
		}
		s.q = make([]held[T], 0, n)
	}
	return s
}

// SendSeq reports whether sequence numbers are being sent now. In LAC mode
// the receive side turns it on and off following the peer (RFC 3931 §5.4.4).
func (s *Seq[T]) SendSeq() bool { return s.sendSeq.Load() }

// RecvSeq reports whether unsequenced packets are discarded.
func (s *Seq[T]) RecvSeq() bool { return s.recvSeq }

// NextSublayer returns the default-sublayer word for the next transmitted
// packet and, when sending sequence numbers, advances ns (24 bits, from 0).
// Call it only for sessions with the default sublayer: the kernel keeps ns
// still when there is no sublayer to carry it.
func (s *Seq[T]) NextSublayer() uint32 {
	if !s.sendSeq.Load() {
		return 0
	}
	return SublayerWord(true, s.ns.Add(1)-1)
}

// NextNS is the ns the next sequenced packet will carry.
func (s *Seq[T]) NextNS() uint32 { return s.ns.Load() & SeqMask }

// SetNextNS sets the ns of the next sequenced packet (restoring a session
// whose peer still expects the old numbering).
func (s *Seq[T]) SetNextNS(ns uint32) { s.ns.Store(ns & SeqMask) }

// SeqSnapshot is the sequencing state for display.
type SeqSnapshot struct {
	SendSeq, RecvSeq bool
	NS, NR           uint32 // next to send, next expected
	Queued           int    // packets in the reorder buffer
}

// Snapshot reads the state; call it where Receive is serialised.
func (s *Seq[T]) Snapshot() SeqSnapshot {
	return SeqSnapshot{SendSeq: s.sendSeq.Load(), RecvSeq: s.recvSeq, NS: s.ns.Load() & SeqMask, NR: s.nr, Queued: len(s.q)}
}

// Receive applies the kernel's rules to a data message that passed the
// cookie check (l2tp_recv_common from the sublayer on). oos reports that
// rx_oos_packets moves (reordering only).
//
// Deliberate difference from the kernel: the first sequenced packet after
// creation is accepted whatever its number. The kernel checks it against
// nr=0 first and so drops a peer whose counter is in the upper half of the
// space until it wraps, which would black-hole a restarted l2tpu for up to
// 2^23 packets.
func (s *Seq[T]) Receive(d Data, item T, now int64) (v Verdict, oos bool) {
	if d.HasSeq {
		if !s.lns && !s.sendSeq.Load() {
			s.sendSeq.Store(true)
		}
	} else {
		if s.recvSeq {
			return DropSeq, false
		}
		if !s.lns {
			if s.sendSeq.Load() {
				s.sendSeq.Store(false)
			}
		} else if s.sendSeq.Load() {
			return DropSeq, false
		}
		// Unsequenced packets are delivered at once (the kernel queues them
		// behind held sequenced ones; l2tpu does not delay them).
		return Deliver, false
	}

	ns := d.NS & SeqMask
	if s.started && (ns-s.nr)&SeqMask >= SeqWindow {
		return DropWindow, false
	}
	if s.timeout > 0 {
		return s.enqueue(ns, item, now)
	}

	if ns != s.nr {
		if ns == (s.nrOOS+1)&SeqMask {
			s.oosRun++
		} else {
			s.oosRun = 0
		}
		s.nrOOS = ns
		if s.oosRun > SeqOOSMax {
			s.skip = true
		}
		if !s.skip {
			return DropSeq, false
		}
	}
	s.accept(ns)
	return Deliver, false
}

// accept makes ns the delivered packet: the resync of l2tp_recv_dequeue
// (reorder_skip) and the nr bump of l2tp_recv_dequeue_skb.
func (s *Seq[T]) accept(ns uint32) {
	if s.skip {
		s.skip = false
		s.nr = ns
	}
	s.started = true
	s.nr = (s.nr + 1) & SeqMask
}

func (s *Seq[T]) key(ns uint32) uint32 { return (ns - s.nr) & SeqMask }

func (s *Seq[T]) enqueue(ns uint32, item T, now int64) (Verdict, bool) {
	if !s.started {
		// The first sequenced packet sets nr (reorder_skip at creation).
		s.started, s.skip, s.nr = true, false, ns
	}
	if len(s.q) == 0 && ns == s.nr {
		s.accept(ns)
		return Deliver, false
	}
	if len(s.q) == cap(s.q) {
		// The caller did not drain with Next; refuse rather than grow.
		return DropSeq, false
	}
	k := s.key(ns)
	i := len(s.q)
	for i > 0 && s.key(s.q[i-1].ns) > k {
		i--
	}
	if i > 0 && s.q[i-1].ns == ns {
		return DropSeq, false // duplicate of a held packet
	}
	if len(s.q) == 0 || now < s.oldest {
		s.oldest = now
	}
	s.q = s.q[:len(s.q)+1]
	copy(s.q[i+1:], s.q[i:])
	s.q[i] = held[T]{ns: ns, at: now, item: item}
	return Queued, i < len(s.q)-1
}

// Next returns the next held packet that may leave now, in sequence order:
// the expected one, or (declaring the gap before it lost) the first held
// one once the oldest held packet has waited the reorder timeout or the
// buffer is full. Unlike the kernel, which drops the packet that waited too
// long, l2tpu delivers it: only the missing packets are lost.
//
// A gap longer than the buffer is no plain loss: the resync rule of
// sessions without reordering applies, so one forged packet far ahead
// cannot move the expected number (and black-hole the session): the held
// packet is delivered, and the receiver resynchronises to it, only as part
// of more than SeqOOSMax consecutive numbers; otherwise it leaves with
// DropSeq (rx_seq_discards).
func (s *Seq[T]) Next(now int64) (item T, v Verdict, ok bool) {
	if len(s.q) == 0 {
		return item, Deliver, false
	}
	h := s.q[0]
	v = Deliver
	if h.ns != s.nr {
		if len(s.q) < cap(s.q) && now-s.oldest < s.timeout {
			return item, Deliver, false
		}
		if s.key(h.ns) > uint32(cap(s.q)) {
			if h.ns == (s.nrOOS+1)&SeqMask {
				s.oosRun++
			} else {
				s.oosRun = 0
			}
			s.nrOOS = h.ns
			if s.oosRun <= SeqOOSMax {
				v = DropSeq
			}
		}
		if v == Deliver {
			s.skip = true // resync to the first held packet
		}
	}
	copy(s.q, s.q[1:])
	var zero held[T]
	s.q[len(s.q)-1] = zero
	s.q = s.q[:len(s.q)-1]
	if h.at == s.oldest {
		s.oldest = s.minArrival()
	}
	if v == Deliver {
		s.accept(h.ns)
	}
	return h.item, v, true
}

func (s *Seq[T]) minArrival() int64 {
	if len(s.q) == 0 {
		return 0
	}
	m := s.q[0].at
	for _, h := range s.q[1:] {
		if h.at < m {
			m = h.at
		}
	}
	return m
}

// Deadline is when Next will next release a packet by timeout, if any are
// held; the dataplane arms a timer for it.
func (s *Seq[T]) Deadline() (int64, bool) {
	if len(s.q) == 0 {
		return 0, false
	}
	if s.oldest > math.MaxInt64-s.timeout {
		return math.MaxInt64, true // never, rather than an overflow into the past
	}
	return s.oldest + s.timeout, true
}

// Purge removes and returns a held packet (session delete: the kernel
// counts each as rx_errors).
func (s *Seq[T]) Purge() (item T, ok bool) {
	if len(s.q) == 0 {
		return item, false
	}
	item = s.q[len(s.q)-1].item
	var zero held[T]
	s.q[len(s.q)-1] = zero
	s.q = s.q[:len(s.q)-1]
	return item, true
}
