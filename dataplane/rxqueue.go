package dataplane

import (
	"sync"
	"sync/atomic"
	"time"
)

// Sessions of one tunnel share its socket, and so its queue in the kernel:
// a flood on one would make every other wait behind it there. So the
// express loop keeps reading a shared socket, delivers the frames of light
// sessions at once, and hands a heavy session's frames (copied) to a queue
// of its own, which a bulk loop delivers: the flood waits in its own queue
// and, when the bulk loop cannot keep up, loses its own frames.

// Queue limits: a heavy session's frames beyond these are dropped.
const (
	rxQueueFrames = 1024
	rxQueueBytes  = 2 << 20
)

// rxQueue is a heavy session's received frames waiting for a bulk loop.
type rxQueue struct {
	mu      sync.Mutex
	frames  []*held // frames[head:] wait
	head    int
	bytes   int
	pending int     // waiting or being delivered: later frames must queue behind them
	src     *source // the bulk loop's, without an fd: served when kicked
	drops   atomic.Uint64
	load    load // how many frames the session brings (its socket's loop's)
}

// rxLight counts a frame the session received and reports whether the
// session is light: at most half a light source's frames per window (so
// it turns heavy before the socket that brings it does). The loop serving
// the session's socket asks.
func (s *session) rxLight(now time.Time) bool {
	return !s.rxq.load.addOver(now, 1, false, lightFrames/2)
}

// rxQueued reports whether frames of the session wait in its queue (a
// frame delivered now would overtake them).
func (s *session) rxQueued() bool {
	q := &s.rxq
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pending > 0
}

// enqueueRx copies a frame into the session's queue, or drops it when the
// queue is full.
func (s *session) enqueueRx(frame []byte, msgLen int) {
	q := &s.rxq
	q.mu.Lock()
	if len(q.frames)-q.head >= rxQueueFrames || q.bytes+len(frame) > rxQueueBytes {
		q.mu.Unlock()
		q.drops.Add(1)
		return
	}
	h := s.m.getHeld()
	h.hold(frame, msgLen)
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
	for _, h := range hs[:n] {
		s.m.putHeld(h)
	}
	q.mu.Lock()
	q.pending -= n
	more := q.pending > 0
	q.mu.Unlock()
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
	q.frames, q.head, q.bytes, q.pending = nil, 0, 0, 0
}
