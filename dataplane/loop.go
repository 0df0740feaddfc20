package dataplane

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/poll"
)

// The scheduling policy, in one place.
//
// Every device that brings work (a session's TAP queue: frames to send; a
// tunnel socket or the namespace's IP listener: messages to deliver) is a
// source, and a Manager's sources are served by a few loops (Tuning.Threads),
// not by a goroutine each. A loop waits until some of its sources are
// ready, then serves each ready source once, one batch (NAPI's budget: one
// system call's worth, conn.MaxBatch frames), round-robin, and starts over.
// So a busy device delays a quiet one by one batch of each other busy
// device, never by its backlog.
//
// That is not enough where the daemon shares the CPU with the programs
// whose traffic it carries: an ordinary thread that has work waits for the
// CPU like any other, and while it waits every session it serves waits,
// the quiet ones behind the flood's queues in the kernel (measured: a ping
// beside a 64-byte flood, p50 1-10 ms and p99 16-40 ms). The kernel's own
// tunnels run in softirq, ahead of every task: frames are moved as they
// come and queues form only at the programs. So the loops' threads run at
// a realtime priority (Tuning.RTPriority, SCHED_FIFO), the whole process's
// threads, since the runtime moves goroutines between them. As the kernel
// keeps a share of every CPU for ordinary tasks and at most Tuning.Threads
// of the daemon's threads run at once, a flood more than it can move takes
// no more than that from the machine's programs. Where nothing competes
// for the CPUs the threads are ordinary, which serves an idle round trip
// better (priority.go).
//
// A realtime thread runs the moment it is woken, which a stream of small
// frames does for every frame or two, each wake-up preempting the program
// that sent them: measured, 125,000 context switches a second and half the
// 64-byte rate of ordinary threads. So the loops moderate their wake-ups as
// a NIC moderates its interrupts: after a round that moved a few frames
// (at most moderateUpTo) and came less than Tuning.Moderation after the
// loop last waited, the loop waits out the rest of that time before it
// looks again, letting frames gather. A quiet session's frame (idle
// pings, a round trip) never waits: its round comes long after the last.

// Policy constants (measured on a 2-vCPU guest; see README "Isolation
// under load").
const (
	// maxReady is how many ready fds one round takes from the kernel;
	// more wait for the next round (the set keeps their order).
	maxReady = 256
	// maxWeight is the most batches a source serves a round (a socket of
	// that many busy sessions).
	maxWeight = 64
	// moderateUpTo is the most frames a round moves that counts as a few
	// (a TCP super-frame alone is up to 45).
	moderateUpTo = batchSize / 4
)

// scheduler is a Manager's loops and the process's realtime priority.
type scheduler struct {
	loops      []*loop
	log        *slog.Logger
	rt         *priority     // nil: ordinary threads
	moderation time.Duration // 0: none
}

// schedConfig is how a scheduler runs.
type schedConfig struct {
	loops      int           // 0: 1
	rtPrio     int           // 0: ordinary threads
	moderation time.Duration // 0: none
	psi        string        // the CPU pressure file (priority.go)
	rtLimit    string        // the realtime bandwidth sysctl's file (priority.go)
}

// The kernel's files the priority policy reads.
const (
	cpuPressure = "/proc/pressure/cpu"
	rtRuntime   = "/proc/sys/kernel/sched_rt_runtime_us"
)

func newScheduler(c schedConfig, log *slog.Logger) (*scheduler, error) {
	sc := &scheduler{log: log, moderation: c.moderation}
	if c.rtPrio > 0 {
		sc.rt = newPriority(c.rtPrio, c.psi, c.rtLimit, log)
	}
	for range max(c.loops, 1) {
		l, err := newLoop(sc)
		if err != nil {
			sc.close()
			return nil, err
		}
		sc.loops = append(sc.loops, l)
	}
	for _, l := range sc.loops {
		go l.serve()
	}
	return sc, nil
}

// result is what a source's batch did.
type result struct {
	frames   int  // frames moved
	more     bool // more may be waiting, possibly where the fd does not show it (the rest of a super-frame being cut)
	sessions int  // a shared socket's: sessions whose frames it brought, not yet counted this round
}

// add makes fd a source, served by run, which serves one batch with the
// buffers of the loop that serves it (turn): on the loop with the fewest
// sources. The fd must stay open until remove returns.
func (sc *scheduler) add(fd int, run func(*turn) result) (*source, error) {
	l := sc.loops[0]
	for _, o := range sc.loops[1:] {
		if o.count.Load() < l.count.Load() {
			l = o
		}
	}
	s := &source{fd: fd, run: run, l: l}
	if err := l.attach(s); err != nil {
		return nil, err
	}
	return s, nil
}

func (sc *scheduler) close() error {
	var first error
	for _, l := range sc.loops {
		if err := l.close(); err != nil && first == nil {
			first = err
		}
	}
	if sc.rt != nil {
		sc.rt.close()
	}
	return first
}

// source is one device a loop serves.
type source struct {
	fd  int
	run func(*turn) result
	l   *loop
	tok int32

	mu     sync.Mutex // held while run runs, and by remove
	dead   bool
	last   uint64 // the round it last ran in (the loop's)
	weight int    // batches it may serve a round (the loop's)
}

// remove stops serving s; once it returns, s.run is not running and never
// runs again, and s's fd may be closed.
func (s *source) remove() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead = true
	return s.l.detach(s)
}

// kick has s served in its loop's next round whatever its fd says (work
// left in userspace by another's read of the device).
func (s *source) kick() {
	l := s.l
	l.mu.Lock()
	first := len(l.kicked) == 0
	l.kicked = append(l.kicked, s)
	l.anyKick.Store(true)
	l.mu.Unlock()
	if first {
		l.poke()
	}
}

// loop serves its sources round-robin, one batch each per round.
type loop struct {
	sc   *scheduler
	set  *poll.Set
	wake int // eventfd: ends a wait

	mu      sync.Mutex // guards srcs, free and kicked
	srcs    []*source  // by token
	free    []int32
	kicked  []*source   // to serve next round whatever their fds say
	anyKick atomic.Bool // kicked is not empty

	count atomic.Int32 // sources, for placing new ones
	stop  atomic.Bool
	done  chan struct{}

	// The loop's own.
	turn        *turn
	toks        []int32
	again, next []*source // to serve next round: not drained, or kicked
	round       uint64
	moved       int       // frames in the round
	waited      time.Time // when the loop last went to wait
}

const wakeToken = -1

func newLoop(sc *scheduler) (*loop, error) {
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
	return &loop{sc: sc, set: set, wake: wake, done: make(chan struct{}), turn: newTurn()}, nil
}

// attach makes s l's.
func (l *loop) attach(s *source) error {
	l.mu.Lock()
	if n := len(l.free); n > 0 {
		s.tok, l.free = l.free[n-1], l.free[:n-1]
		l.srcs[s.tok] = s
	} else {
		s.tok = int32(len(l.srcs))
		l.srcs = append(l.srcs, s)
	}
	l.mu.Unlock()
	if err := l.set.Add(s.fd, s.tok); err != nil {
		l.release(s)
		return err
	}
	l.count.Add(1)
	return nil
}

// detach takes s from l (s.mu held).
func (l *loop) detach(s *source) error {
	err := l.set.Del(s.fd)
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
		l.moved = 0
		for _, s := range cur {
			l.serveOne(s)
		}
		for _, t := range toks {
			if t == wakeToken {
				var b [8]byte
				unix.Read(l.wake, b[:])
			} else if s := l.lookup(t); s != nil {
				l.serveOne(s)
			}
		}
		clear(cur)
		l.next = cur[:0]
		end := time.Now()
		if rt := l.sc.rt; rt != nil {
			rt.tick(end)
		}
		// Timers (reordering) and the control plane's goroutines get
		// their turn between rounds.
		runtime.Gosched()
		l.moderate(t0, end)
	}
}

// moderate waits out the rest of the moderation time after a small round
// that came soon after the loop last waited (see the policy above).
func (l *loop) moderate(start, end time.Time) {
	d := l.sc.moderation
	if d > 0 && l.moved > 0 && l.moved <= moderateUpTo && start.Sub(l.waited) < d {
		if rest := d - end.Sub(start); rest > 0 {
			// A raw call: the goroutine keeps its P, as in any system
			// call of the data path, and nothing else waits for it.
			ts := unix.NsecToTimespec(int64(rest))
			unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
			end = time.Now()
		}
	}
	l.waited = end
}

// serveOne serves s's batches of this round: one for each session whose
// frames it brought last round (a tunnel's socket carries all its
// sessions' frames; a TAP queue, one session's), so that each session that
// has frames moves a batch a round, however they come.
func (l *loop) serveOne(s *source) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead || s.last == l.round {
		return // removed, or ready twice in a round: once is its share
	}
	s.last = l.round
	l.turn.round = l.round
	sessions := 0
	for n := 0; ; {
		r := s.run(l.turn)
		l.moved += r.frames
		sessions += r.sessions
		if n++; !r.more {
			break
		}
		if n >= max(s.weight, 1) {
			l.again = append(l.again, s)
			break
		}
	}
	s.weight = min(sessions, maxWeight)
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
