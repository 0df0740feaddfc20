package dataplane

import (
	"cmp"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/poll"
	"github.com/l2tpu/l2tpu/internal/rtsched"
)

// The scheduling policy, in one place.
//
// Every device that brings work (a session's TAP queue: frames to send; a
// tunnel socket or the namespace's IP listener: messages to deliver) is a
// source, and a Manager's sources are served by a few loops, not by a
// goroutine each. A loop waits until some of its sources are ready, then
// serves each ready source once, one batch (NAPI's budget: one system
// call's worth, conn.MaxBatch frames), round-robin, and starts over. So a
// busy device delays a quiet one by one batch of each other busy device,
// not by its whole backlog.
//
// That is not enough where the daemon competes for the CPU with the
// programs whose traffic it carries: a loop that always has work is one
// more busy thread, and the kernel's scheduler leaves a busy thread waiting
// for a tick (4 ms at HZ=250) whenever others want the CPU, with every
// session it serves. So sources are of two kinds, as in the kernel, where
// packets are handled ahead of every task but a flood goes to ksoftirqd.
// Light sources are served by the express loop, whose thread runs at a
// realtime priority (Tuning.RTPriority), and so at once when a frame
// arrives. A source that keeps its loop busy (frames over a light rate, or
// full batches round after round) moves to a bulk loop, an ordinary thread
// that shares the CPU fairly with everything else, and comes back once it
// has been quiet for a while. A socket that brings frames of light and of
// heavy sessions (the sessions of one tunnel share its socket) stays in
// the express loop, which hands the heavy sessions' frames to queues of
// their own for a bulk loop to deliver (rxqueue.go). And the express loop
// moves its costliest sources to bulk loops whenever it has been busy for
// more than a share of the CPU, so it can never take the machine from the
// programs.

// Policy constants (measured on a 2-vCPU guest; see README "Isolation
// under load").
const (
	// A source is light while it brings at most lightFrames frames per
	// window (3,200 a second; a session's flow, half that) and never a
	// backlog of demoteAfter full batches in a row; heavier, it moves to
	// a bulk loop, and comes back after promoteAfter at under a quarter
	// of that rate.
	window       = 10 * time.Millisecond
	lightFrames  = 32
	demoteAfter  = 4
	promoteAfter = 100 * time.Millisecond
	// A socket stays the express loop's while light sessions came in it
	// within lightHold (a sparse flow's next frame is served as its last
	// was), or a flood's queue was deep within promoteAfter.
	lightHold = 200 * time.Millisecond
	// The express loop may be busy expressShare of each guardWindow;
	// beyond, its costliest sources move to bulk loops.
	guardWindow  = 100 * time.Millisecond
	expressShare = 0.3
	// moderation is how long the express loop lets heavy traffic gather
	// after a round that queued frames and left nothing unread.
	moderation = 50 * time.Microsecond
	// maxReady is how many ready fds one round takes from the kernel;
	// more wait for the next round (the set keeps their order).
	maxReady = 256
)

// scheduler is a Manager's loops and where sources go.
type scheduler struct {
	express *loop // nil: every source is bulk
	bulk    []*loop
	log     *slog.Logger
}

func newScheduler(bulk int, express bool, rtPrio int, log *slog.Logger) (*scheduler, error) {
	sc := &scheduler{log: log}
	for range max(bulk, 1) {
		l, err := newLoop(0, false)
		if err != nil {
			sc.close()
			return nil, err
		}
		l.sc = sc
		sc.bulk = append(sc.bulk, l)
	}
	if express {
		l, err := newLoop(rtPrio, true)
		if err != nil {
			sc.close()
			return nil, err
		}
		l.sc = sc
		sc.express = l
	}
	for _, l := range sc.loops() {
		go l.serve()
	}
	return sc, nil
}

func (sc *scheduler) loops() []*loop {
	if sc.express == nil {
		return sc.bulk
	}
	return append([]*loop{sc.express}, sc.bulk...)
}

// leastBusy is the bulk loop with the fewest sources.
func (sc *scheduler) leastBusy() *loop {
	best := sc.bulk[0]
	for _, l := range sc.bulk[1:] {
		if l.count.Load() < best.count.Load() {
			best = l
		}
	}
	return best
}

// result is what a source's batch did.
type result struct {
	frames int  // frames the loop moved itself (not those handed to queues)
	queued int  // a socket's frames handed to heavy sessions' queues
	more   bool // more may be waiting, possibly where the fd does not show it (the rest of a super-frame being cut)
	// A socket's: it brought frames of light sessions, of heavy ones,
	// of a flood (a heavy flow that does not slow down for losses, other
	// sessions beside it); read by a bulk loop, there was a backlog to
	// wait in; read by the express loop, the flood's queue stayed deep.
	// A socket where light sessions wait, or may soon, belongs to the
	// express loop, which keeps them from waiting behind the others.
	light, heavy, flood, waited, deep bool
}

// add makes fd a source, served by run, which serves one batch with the
// buffers of the loop that serves it (turn). The fd must stay open until
// remove returns. New sources start light.
func (sc *scheduler) add(fd int, run func(*turn) result) (*source, error) {
	l := sc.express
	if l == nil {
		l = sc.leastBusy()
	}
	return sc.attach(l, &source{fd: fd, run: run})
}

// addQueue makes a source without an fd, served by a bulk loop whenever
// kicked: a heavy session's queue of received frames.
func (sc *scheduler) addQueue(run func(*turn) result) (*source, error) {
	return sc.attach(sc.leastBusy(), &source{fd: -1, pinned: true, run: run})
}

func (sc *scheduler) attach(l *loop, s *source) (*source, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := l.attach(s); err != nil {
		return nil, err
	}
	return s, nil
}

func (sc *scheduler) close() error {
	var first error
	for _, l := range sc.loops() {
		if err := l.close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// source is one device a loop serves.
type source struct {
	fd     int // -1: served only when kicked
	pinned bool
	run    func(*turn) result

	mu   sync.Mutex // held while run and while moving between loops
	dead bool
	l    atomic.Pointer[loop] // the loop that serves it (moves under mu)
	tok  int32                // in l

	// The serving loop's:
	last uint64        // round it last ran in
	load load          // frames it brings
	cost time.Duration // express: time spent serving it this window
}

// load is how busy a source keeps its loop.
type load struct {
	from         time.Time // the window's start
	frames, prev int       // in the window, in the one before
	full         int       // full batches in a row
	quiet        time.Time // since when it has been light (bulk)
	// When a socket last brought frames of a light, of a heavy session,
	// and (express) a flood whose queue was deep.
	lightAt, heavyAt, floodAt time.Time
}

// shared reports whether a socket has brought frames of light and of
// heavy flows lately: heavy ones in the last promoteAfter, light ones in
// the last lightHold (a sparse flow's next frame is to be served as its
// last was).
func (ld *load) shared(now time.Time) bool {
	return now.Sub(ld.lightAt) < lightHold && now.Sub(ld.heavyAt) < promoteAfter
}

// add counts a batch and reports whether the source is heavy: over
// lightFrames in its window, or backlogged.
func (ld *load) add(now time.Time, n int, more bool) (heavy bool) {
	return ld.addOver(now, n, more, lightFrames)
}

// addOver is add with its own frame limit.
func (ld *load) addOver(now time.Time, n int, more bool, limit int) (heavy bool) {
	// A backlog counts where the loop moved frames itself: a socket
	// whose frames all went to queues was cheap, however full.
	if ld.full++; !more || n == 0 {
		ld.full = 0
	}
	if el := now.Sub(ld.from); el >= window {
		ld.prev = 0
		if el < 2*window {
			ld.prev = ld.frames
		}
		ld.from, ld.frames = now, 0
	}
	ld.frames += n
	return max(ld.frames, ld.prev) > limit || ld.full >= demoteAfter
}

// remove stops serving s; once it returns, s.run is not running and never
// runs again, and s's fd may be closed.
func (s *source) remove() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead = true
	return s.l.Load().detach(s)
}

// kick has s served in its loop's next round whatever its fd says (work
// left in userspace by another's read of the device).
func (s *source) kick() {
	for {
		l := s.l.Load()
		l.mu.Lock()
		if s.l.Load() != l {
			l.mu.Unlock()
			continue // moved meanwhile
		}
		first := len(l.kicked) == 0
		l.kicked = append(l.kicked, s)
		l.anyKick.Store(true)
		l.mu.Unlock()
		if first {
			l.poke()
		}
		return
	}
}

// loop serves its sources round-robin, one batch each per round.
type loop struct {
	sc     *scheduler
	rtPrio int // realtime priority of the express loop's thread; 0: bulk
	set    *poll.Set
	wake   int // eventfd: ends a wait

	mu      sync.Mutex // guards srcs, free and kicked
	srcs    []*source  // by token
	free    []int32
	kicked  []*source   // to serve next round whatever their fds say
	anyKick atomic.Bool // kicked is not empty

	count atomic.Int32 // sources, for placing new ones
	stop  atomic.Bool
	done  chan struct{}

	// The loop thread's own.
	turn        *turn
	toks        []int32
	again, next []*source // to serve next round: not drained, or kicked
	round       uint64
	guard       cpuGuard
	queued      int // express: frames the round handed to queues
}

const wakeToken = -1

func newLoop(rtPrio int, express bool) (*loop, error) {
	// The express loop blocks in its own thread, which the kernel then
	// wakes at its realtime priority; bulk loops park in the runtime's
	// poller.
	set, err := poll.NewSet(maxReady, express)
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
	return &loop{rtPrio: rtPrio, set: set, wake: wake, done: make(chan struct{}), turn: newTurn(express)}, nil
}

func (l *loop) isExpress() bool { return l == l.sc.express }

// attach makes s l's (s.mu held).
func (l *loop) attach(s *source) error {
	l.mu.Lock()
	if n := len(l.free); n > 0 {
		s.tok, l.free = l.free[n-1], l.free[:n-1]
		l.srcs[s.tok] = s
	} else {
		s.tok = int32(len(l.srcs))
		l.srcs = append(l.srcs, s)
	}
	s.l.Store(l)
	l.mu.Unlock()
	if s.fd >= 0 {
		if err := l.set.Add(s.fd, s.tok); err != nil {
			l.release(s)
			return err
		}
	}
	l.count.Add(1)
	return nil
}

// detach takes s from l (s.mu held).
func (l *loop) detach(s *source) error {
	var err error
	if s.fd >= 0 {
		err = l.set.Del(s.fd)
	}
	l.release(s)
	l.count.Add(-1)
	return err
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

// poke ends the loop's wait, if it waits.
func (l *loop) poke() {
	one := [8]byte{1}
	unix.Write(l.wake, one[:])
}

// serve is the loop.
func (l *loop) serve() {
	defer close(l.done)
	l.guard.from = time.Now()
	var rt realtimeThread
	defer rt.release()
	if l.rtPrio > 0 {
		rt.follow(l.rtPrio, l.sc.log)
	}
	for !l.stop.Load() {
		// Sources left with work the fd may not show are served without
		// waiting; the kernel reports the others.
		toks, err := l.set.Ready(len(l.again) == 0 && !l.anyKick.Load(), l.toks[:0])
		l.toks = toks
		if err != nil {
			l.sc.log.Error("loop stopped: its sessions no longer move frames", "err", err)
			return
		}
		t0 := time.Now()
		l.round++
		if l.anyKick.Load() {
			l.mu.Lock()
			l.again = append(l.again, l.kicked...)
			clear(l.kicked)
			l.kicked = l.kicked[:0]
			l.anyKick.Store(false)
			l.mu.Unlock()
		}
		cur := l.again
		l.again = l.next[:0]
		l.queued = 0
		for _, s := range cur {
			l.serveOne(s, t0)
		}
		for _, t := range toks {
			if t == wakeToken {
				var b [8]byte
				unix.Read(l.wake, b[:])
			} else if s := l.lookup(t); s != nil {
				l.serveOne(s, t0)
			}
		}
		clear(cur)
		l.next = cur[:0]
		if !l.isExpress() {
			if l.sc.express == nil {
				// Timers (reordering) and the control plane's
				// goroutines get their turn between rounds. (With an
				// express loop they get it on its P, when it yields:
				// a yield here could swap the two loops' threads.)
				runtime.Gosched()
			}
			continue
		}
		l.guard.check(l, t0)
		if t0.Sub(rt.since) >= poll.ThreadWait {
			// Let the runtime schedule now and then (see
			// realtimeThread), on an ordinary thread: it may run
			// others' goroutines there meanwhile.
			rt.release()
			runtime.Gosched()
			rt.since = time.Now()
		}
		if l.rtPrio > 0 {
			rt.follow(l.rtPrio, l.sc.log)
		}
		if l.queued > 0 && len(l.again) == 0 && moderation > 0 {
			// Heavy traffic, all read: let it gather for a moment
			// rather than wake for every few frames (as a NIC's
			// interrupt moderation does). Light frames wait that long
			// at most.
			ts := unix.NsecToTimespec(int64(moderation))
			unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
		}
	}
}

// serveOne serves s's batch of this round and moves it to the loop its load
// calls for.
func (l *loop) serveOne(s *source, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead || s.l.Load() != l || s.last == l.round {
		return // removed, moved meanwhile, or ready twice in a round: once is its share
	}
	s.last = l.round
	express := l.isExpress()
	r := s.run(l.turn)
	if express {
		l.guard.charge(s, time.Since(now))
		l.queued += r.queued
	}
	heavy := s.load.add(now, r.frames, r.more)
	if r.light {
		s.load.lightAt = now
	}
	if r.heavy {
		s.load.heavyAt = now
	}
	if r.deep {
		s.load.floodAt = now
	}
	to := l
	switch {
	case l.sc.express == nil || s.pinned:
	case express:
		// Heavy itself, or a socket of heavy sessions only: nothing
		// light waits behind them, and queueing them costs.
		if heavy || r.queued > 0 && !s.load.shared(now) && now.Sub(s.load.floodAt) > promoteAfter {
			to = l.sc.leastBusy()
		}
	case r.waited:
		to = l.sc.express // at once: a light session waits
	case heavy || s.load.frames > lightFrames/4:
		s.load.quiet = now
	case now.Sub(s.load.quiet) > promoteAfter:
		to = l.sc.express
	}
	if to == l {
		if r.more {
			l.again = append(l.again, s)
		}
		return
	}
	l.move(s, to, now, r.more)
}

// move makes s (locked, l's) to's; with more it is served in to's next
// round.
func (l *loop) move(s *source, to *loop, now time.Time, more bool) {
	if err := l.detach(s); err != nil {
		l.sc.log.Error("moving a source", "err", err)
	}
	l.sc.log.Debug("source moves", "fd", s.fd, "to_express", to.isExpress(), "frames", s.load.frames, "full", s.load.full, "light_ago", now.Sub(s.load.lightAt), "heavy_ago", now.Sub(s.load.heavyAt))
	s.load, s.last = load{from: now, quiet: now, lightAt: s.load.lightAt, heavyAt: s.load.heavyAt, floodAt: now}, 0
	if err := to.attach(s); err != nil {
		// Its fd is gone (being removed): nothing more to serve.
		l.sc.log.Error("moving a source", "err", err)
		return
	}
	if more {
		s.kick()
	}
}

// realtimeThread is the express loop's realtime priority, which belongs to
// a thread while the loop's goroutine may move between threads. The
// goroutine is not locked to one: a locked goroutine can yield to the
// runtime only by handing its P to another thread and waiting for it to
// hand the P back, and that thread, an ordinary one, waits for the CPU
// like any other. It waits in its thread instead, keeping its P (so no
// descheduled thread can hold the P it needs when a frame arrives), and
// yields every poll.ThreadWait, before the runtime would preempt it (after
// 10 ms on one P without a scheduler call), which gives its P to whatever
// else is runnable. After a yield it may run on another thread: follow
// moves the priority with it.
type realtimeThread struct {
	tid    int // the thread that has the priority, 0: none
	since  time.Time
	warned bool
}

func (r *realtimeThread) follow(prio int, log *slog.Logger) {
	tid := unix.Gettid()
	if tid == r.tid {
		return
	}
	r.release()
	if err := rtsched.Realtime(prio); err != nil {
		if !r.warned {
			r.warned = true
			log.Warn("express thread: no realtime priority; light sessions share the CPU as ordinary threads do (give the daemon CAP_SYS_NICE, or an RLIMIT_RTPRIO)", "priority", prio, "err", err)
		}
		return
	}
	r.tid = tid
}

// release gives the thread that had the priority (which may now run any
// goroutine) the ordinary policy back.
func (r *realtimeThread) release() {
	if r.tid != 0 {
		rtsched.OrdinaryThread(r.tid)
		r.tid = 0
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

// cpuGuard keeps the express loop light: when it has been busy more than
// expressShare of a window, the sources that cost it most move to bulk
// loops until what is left costs half that.
type cpuGuard struct {
	from time.Time
	busy time.Duration
	srcs []*source // served this window, with their cost
}

func (g *cpuGuard) charge(s *source, d time.Duration) {
	if s.cost == 0 {
		g.srcs = append(g.srcs, s)
	}
	s.cost += d
	g.busy += d
}

// check ends a window that is over, moving the costliest sources if it
// was too busy (the loop's thread, sources unlocked).
func (g *cpuGuard) check(l *loop, now time.Time) {
	el := now.Sub(g.from)
	if el < guardWindow {
		return
	}
	if float64(g.busy) > expressShare*float64(el) {
		slices.SortFunc(g.srcs, func(a, b *source) int { return cmp.Compare(b.cost, a.cost) })
		left := g.busy
		for _, s := range g.srcs {
			if float64(left) <= expressShare/2*float64(el) {
				break
			}
			left -= s.cost
			s.mu.Lock()
			if !s.dead && s.l.Load() == l {
				l.move(s, l.sc.leastBusy(), now, true)
			}
			s.mu.Unlock()
		}
	}
	for _, s := range g.srcs {
		s.cost = 0
	}
	clear(g.srcs)
	g.srcs, g.from, g.busy = g.srcs[:0], now, 0
}
