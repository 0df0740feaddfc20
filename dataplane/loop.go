package dataplane

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/poll"
)

// The scheduling policy, in one place. Every device that brings work (a
// session's TAP queue: frames to send; a tunnel socket or the namespace's
// IP listener: messages to deliver) is a source, and a Manager's sources
// are served by a few loops (one per thread that may run Go code), not by
// a goroutine each. A loop waits until some of its sources are ready, then
// serves each ready source once, one batch (NAPI's budget: one system
// call's worth, conn.MaxBatch frames), round-robin, and starts over. So a
// busy device delays a quiet one by one batch of each other busy device,
// not by its whole backlog, and a loop never hogs its thread: between
// rounds it lets the runtime run timers and the control plane.
//
// A goroutine per device cannot give that: with one P, a goroutine that
// always has work keeps it for up to 10 ms (the runtime's preemption
// slice), and the runtime looks at the network poller for the others only
// when it has nothing else to run. Measured (two sessions, one flooded
// with 64-byte UDP): the quiet session's ping p50 15-130 ms before.

// loop serves its sources round-robin, one batch each per round.
type loop struct {
	set  *poll.Set
	wake int // eventfd: ends a wait (stop)

	mu     sync.Mutex // guards srcs, free and kicked: sources come and go from the control plane
	srcs   []*source  // by token
	free   []int32
	kicked []*source // to serve next round whatever the fd says

	count atomic.Int32 // sources, for placing new ones
	stop  atomic.Bool
	done  chan struct{}

	// The loop goroutine's own.
	toks        []int32
	again, next []*source // served last round and not drained
	round       uint64
}

// source is one device a loop serves.
type source struct {
	fd  int
	tok int32
	l   *loop
	// run serves one batch and reports whether more is waiting, possibly
	// where the fd does not show it (the rest of a super-frame being cut).
	run func() bool

	mu   sync.Mutex // held while run: removal waits for a batch in progress
	dead bool
	last uint64 // the round it last ran in (the loop's)
}

// wakeToken is the eventfd's.
const wakeToken = -1

// maxReady is how many ready fds one round takes from the kernel; more wait
// for the next round (the set keeps their order).
const maxReady = 256

func newLoop() (*loop, error) {
	set, err := poll.NewSet(maxReady)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		set.Close()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := set.Add(wake, wakeToken); err != nil {
		set.Close()
		unix.Close(wake)
		return nil, err
	}
	l := &loop{set: set, wake: wake, done: make(chan struct{})}
	go l.serve()
	return l, nil
}

// add makes fd a source of l, served by run. The fd must stay open until
// remove returns.
func (l *loop) add(fd int, run func() bool) (*source, error) {
	s := &source{fd: fd, l: l, run: run}
	l.mu.Lock()
	if n := len(l.free); n > 0 {
		s.tok, l.free = l.free[n-1], l.free[:n-1]
		l.srcs[s.tok] = s
	} else {
		s.tok = int32(len(l.srcs))
		l.srcs = append(l.srcs, s)
	}
	l.mu.Unlock()
	if err := l.set.Add(fd, s.tok); err != nil {
		l.release(s)
		return nil, err
	}
	l.count.Add(1)
	return s, nil
}

// remove stops serving s; once it returns, s.run is not running and never
// runs again, and s's fd may be closed.
func (s *source) remove() error {
	l := s.l
	err := l.set.Del(s.fd)
	s.mu.Lock()
	s.dead = true
	s.mu.Unlock()
	l.release(s)
	l.count.Add(-1)
	return err
}

// kick has s served in its loop's next round even if its fd does not poll
// readable (work left in userspace by someone else's read of the device).
func (s *source) kick() {
	l := s.l
	l.mu.Lock()
	first := len(l.kicked) == 0
	l.kicked = append(l.kicked, s)
	l.mu.Unlock()
	if first {
		l.poke()
	}
}

// poke ends the loop's wait, if it waits.
func (l *loop) poke() {
	one := [8]byte{1}
	unix.Write(l.wake, one[:])
}

func (l *loop) release(s *source) {
	l.mu.Lock()
	l.srcs[s.tok] = nil
	l.free = append(l.free, s.tok)
	l.mu.Unlock()
}

func (l *loop) lookup(tok int32) *source {
	l.mu.Lock()
	defer l.mu.Unlock()
	if tok < 0 || int(tok) >= len(l.srcs) {
		return nil
	}
	return l.srcs[tok]
}

// serve is the loop.
func (l *loop) serve() {
	defer close(l.done)
	for !l.stop.Load() {
		// Sources left with work the fd may not show are served without
		// waiting; the kernel reports the others.
		toks, err := l.set.Ready(len(l.again) == 0, l.toks[:0])
		l.toks = toks
		if err != nil {
			return
		}
		l.round++
		l.mu.Lock()
		l.again = append(l.again, l.kicked...)
		clear(l.kicked)
		l.kicked = l.kicked[:0]
		l.mu.Unlock()
		cur := l.again
		l.again = l.next[:0]
		for _, s := range cur {
			l.serveOne(s)
		}
		for _, t := range toks {
			if t == wakeToken {
				var b [8]byte
				unix.Read(l.wake, b[:])
				continue
			}
			if s := l.lookup(t); s != nil {
				l.serveOne(s)
			}
		}
		clear(cur)
		l.next = cur[:0]
		// Timers (reordering) and the control plane's goroutines get
		// their turn between rounds.
		runtime.Gosched()
	}
}

func (l *loop) serveOne(s *source) {
	if s.last == l.round {
		return // ready twice in one round: once is its share
	}
	s.last = l.round
	s.mu.Lock()
	more := false
	if !s.dead {
		more = s.run()
	}
	s.mu.Unlock()
	if more {
		l.again = append(l.again, s)
	}
}

// close ends the loop once its sources are removed.
func (l *loop) close() error {
	l.stop.Store(true)
	l.poke()
	<-l.done
	err := l.set.Close()
	if cerr := unix.Close(l.wake); err == nil {
		err = cerr
	}
	return err
}

// loops are a Manager's; new sources go to the one with the fewest.
type loops []*loop

func newLoops(n int) (loops, error) {
	var ls loops
	for range max(n, 1) {
		l, err := newLoop()
		if err != nil {
			ls.close()
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func (ls loops) add(fd int, run func() bool) (*source, error) {
	best := ls[0]
	for _, l := range ls[1:] {
		if l.count.Load() < best.count.Load() {
			best = l
		}
	}
	return best.add(fd, run)
}

func (ls loops) close() error {
	var first error
	for _, l := range ls {
		if err := l.close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
