package dataplane

import (
	"sync/atomic"
	"time"

	"github.com/l2tpu/l2tpu/tap"
)

// Sessions of one tunnel share its socket, and so its queue in the kernel:
// a flood on one would make every other wait behind it there, and a bulk
// stream, every other flow of its own session. So the express loop keeps
// reading a shared socket, delivers the frames of light flows at once, and
// hands a heavy flow's frames (copied) to its session's queue, which a
// bulk loop delivers: the flood waits in its own queue and, when the bulk
// loop cannot keep up, loses its own frames.
//
// Flows are told apart by a hash of their headers (tap.FlowHash) into a
// few buckets per session; frames of one flow keep their order (one that
// turns light waits while frames of it are queued), flows of a session may
// overtake each other, as on any multi-queue link.

// Queue limits: a session's frames beyond these are dropped.
const (
	rxQueueFrames = 1024
	rxQueueBytes  = 2 << 20
	flowBuckets   = 16
)

// rxQueue is a session's received frames of heavy flows, waiting for a
// bulk loop: a ring that one loop fills (the express loop, serving the
// session's socket) and one empties (the bulk loop serving the queue),
// without locks: a realtime thread must never wait for an ordinary one.
type rxQueue struct {
	ring  atomic.Pointer[rxRing] // made at the session's first frame: idle sessions hold none
	src   *source                // the bulk loop's, without an fd: served when kicked
	drops atomic.Uint64
}

type rxRing struct {
	heavyAt time.Time // when a flow of the session was last heavy (the socket's loop's)
	slots   [rxQueueFrames]*held
	tail    atomic.Uint64 // the filler's: slots filled
	done    atomic.Uint64 // the emptier's: slots delivered
	bytes   atomic.Int64
	flows   [flowBuckets]flowState
}

type flowState struct {
	load    load         // the loop serving the socket's
	pending atomic.Int32 // frames of it queued and not delivered: later ones must queue behind them
}

// rxClass is what rxFlow tells of a received frame.
type rxClass struct {
	bucket       int
	light        bool // its flow is light
	lightSession bool // so is every flow of its session, lately
	flood        bool // its flow is heavy and not TCP: it does not slow down for losses
}

// rxFlow counts a frame the session received and classifies it: its
// flow's bucket; whether the flow is light (at most half a light source's
// frames per window, so that it turns heavy before the socket that brings
// it does), and the whole session (none of its flows heavy lately); and
// whether it is a flood. The loop serving the session's socket asks.
func (s *session) rxFlow(now time.Time, frame []byte) rxClass {
	r := s.rxq.ring.Load()
	if r == nil {
		r = new(rxRing)
		s.rxq.ring.Store(r)
	}
	h, tcp := tap.FlowHash(s.m.flowSeed, frame)
	c := rxClass{bucket: int(h % flowBuckets)}
	c.light = !r.flows[c.bucket].load.addOver(now, 1, false, lightFrames/2)
	if !c.light {
		r.heavyAt = now
	}
	c.lightSession = now.Sub(r.heavyAt) > 2*window
	c.flood = !c.light && !tcp
	return c
}

// rxDepth is how many frames wait in the session's queue.
func (s *session) rxDepth() int {
	r := s.rxq.ring.Load()
	return int(r.tail.Load() - r.done.Load())
}

// rxQueued reports whether frames of the flow wait in the queue (a frame
// of it delivered now would overtake them).
func (s *session) rxQueued(bucket int) bool {
	return s.rxq.ring.Load().flows[bucket].pending.Load() > 0
}

// enqueueRx copies a frame of the flow in bucket into the session's queue,
// or drops it when the queue is full (after rxFlow).
func (s *session) enqueueRx(frame []byte, msgLen, bucket int) {
	r := s.rxq.ring.Load()
	t := r.tail.Load()
	if t-r.done.Load() >= rxQueueFrames || r.bytes.Load()+int64(len(frame)) > rxQueueBytes {
		s.rxq.drops.Add(1)
		return
	}
	h := s.m.getHeld()
	h.hold(frame, msgLen)
	h.flow = uint8(bucket)
	r.flows[bucket].pending.Add(1)
	r.bytes.Add(int64(len(frame)))
	r.slots[t%rxQueueFrames] = h
	r.tail.Store(t + 1)
	if r.done.Load() == t {
		// Empty until now: the bulk loop may be waiting. (It checks the
		// tail after publishing done, so one of the two sees the other.)
		s.rxq.src.kick()
	}
}

// drainRx delivers one batch of the queue (the bulk loop's turn).
func (s *session) drainRx(t *turn) result {
	r := s.rxq.ring.Load()
	if r == nil {
		return result{}
	}
	hs, bufs := t.held, t.rx.out // the turn's: a queue is not a socket
	d := r.done.Load()
	n := int(min(r.tail.Load()-d, uint64(len(hs))))
	for i := range n {
		k := (d + uint64(i)) % rxQueueFrames
		hs[i], r.slots[k] = r.slots[k], nil
		bufs[i] = hs[i].frame
	}
	if n > 0 {
		s.deliver(bufs[:n], 0, t.tx)
	}
	for _, h := range hs[:n] {
		r.flows[h.flow].pending.Add(-1)
		r.bytes.Add(-int64(len(h.frame)))
		s.m.putHeld(h)
	}
	clear(hs[:n])
	r.done.Store(d + uint64(n))
	return result{frames: n, more: r.tail.Load() > d+uint64(n)}
}

// purgeRx drops what waits (the session is going: its sources removed).
func (s *session) purgeRx() {
	r := s.rxq.ring.Swap(nil)
	if r == nil {
		return
	}
	for k := r.done.Load(); k < r.tail.Load(); k++ {
		s.m.putHeld(r.slots[k%rxQueueFrames])
	}
}
