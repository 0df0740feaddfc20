package dataplane

import (
	"sync"
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
// bulk loop.
type rxQueue struct {
	mu      sync.Mutex
	frames  []*held // frames[head:] wait
	head    int
	bytes   int
	pending int     // waiting or being delivered
	src     *source // the bulk loop's, without an fd: served when kicked
	drops   atomic.Uint64
	// flows: made at the session's first frame, so that idle sessions
	// hold none. Their loads are the socket's loop's; pending is mu's.
	flows *[flowBuckets]flowState
}

type flowState struct {
	load    load
	pending int // frames of it waiting or being delivered: later ones must queue behind them
}

// rxFlow counts a frame the session received: its flow's bucket, and
// whether the flow is light (at most half a light source's frames per
// window, so that it turns heavy before the socket that brings it does).
// The loop serving the session's socket asks.
func (s *session) rxFlow(now time.Time, frame []byte) (bucket int, light bool) {
	q := &s.rxq
	if q.flows == nil {
		q.mu.Lock()
		q.flows = new([flowBuckets]flowState)
		q.mu.Unlock()
	}
	bucket = int(tap.FlowHash(s.m.flowSeed, frame) % flowBuckets)
	return bucket, !q.flows[bucket].load.addOver(now, 1, false, lightFrames/2)
}

// rxQueued reports whether frames of the flow wait in the queue (a frame
// of it delivered now would overtake them).
func (s *session) rxQueued(bucket int) bool {
	q := &s.rxq
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.flows[bucket].pending > 0
}

// enqueueRx copies a frame of the flow in bucket into the session's queue,
// or drops it when the queue is full.
func (s *session) enqueueRx(frame []byte, msgLen, bucket int) {
	q := &s.rxq
	q.mu.Lock()
	if len(q.frames)-q.head >= rxQueueFrames || q.bytes+len(frame) > rxQueueBytes {
		q.mu.Unlock()
		q.drops.Add(1)
		return
	}
	h := s.m.getHeld()
	h.hold(frame, msgLen)
	h.flow = uint8(bucket)
	q.flows[bucket].pending++
	if q.head > 0 && q.head == len(q.frames) {
		q.frames, q.head = q.frames[:0], 0
	}
	q.frames = append(q.frames, h)
	q.bytes += len(frame)
	q.pending++
	first := q.pending == 1
	q.mu.Unlock()
	if first {
		q.src.kick()
	}
}

// drainRx delivers one batch of the queue (the bulk loop's turn).
func (s *session) drainRx(t *turn) result {
	q := &s.rxq
	hs, bufs := t.held, t.rx.out // the turn's: a queue is not a socket
	q.mu.Lock()
	n := copy(hs, q.frames[q.head:])
	clear(q.frames[q.head : q.head+n])
	q.head += n
	for i, h := range hs[:n] {
		bufs[i] = h.frame
		q.bytes -= len(h.frame)
	}
	q.mu.Unlock()
	if n > 0 {
		s.deliver(bufs[:n], 0, t.tx)
	}
	q.mu.Lock()
	for _, h := range hs[:n] {
		q.flows[h.flow].pending--
	}
	q.pending -= n
	more := q.pending > 0
	q.mu.Unlock()
	for _, h := range hs[:n] {
		s.m.putHeld(h)
	}
	return result{frames: n, more: more}
}

// purgeRx drops what waits (the session is going).
func (s *session) purgeRx() {
	q := &s.rxq
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, h := range q.frames[q.head:] {
		s.m.putHeld(h)
	}
	q.frames, q.head, q.bytes, q.pending, q.flows = nil, 0, 0, 0, nil
}
