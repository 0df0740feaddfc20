package dataplane

import (
	"bytes"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/rtsched"
)

// The process's scheduling priority (see loop.go for why it is realtime).
//
// Realtime costs where nothing competes for the CPUs: a realtime thread is
// woken on the CPU it last ran on, an ordinary one where the scheduler
// finds best (often the waker's), so an idle round trip through two
// daemons takes two more inter-processor interrupts (measured: 4.9 against
// 2.9 a ping, RTT p50 +40 µs). So the threads are realtime only while the
// CPUs are contended: while, by the kernel's pressure stall information
// (/proc/pressure/cpu), some task waited for a CPU at least busyStall of
// the time, and until it has waited less than calmStall for calmWindows
// readings in a row. Where the kernel has no PSI, always.
//
// And never for long at a whole CPU: a realtime process that has used at
// least hotShare of a CPU for each of its loops over hotFor (a flood more
// than it can move: the kernel would hand that work to ksoftirqd, an
// ordinary thread) is ordinary for a hold-off, which doubles each time it
// comes back hot (up to maxHold), so that a flood can take a CPU from the
// machine's programs for a second at a time, seldom. Its own CPU time,
// not how busy its loops look, because under a flood a loop that reads all
// there is each round (dropping the rest at the socket) looks idle between
// rounds.

// Priority constants.
const (
	// The CPU pressure and the process's CPU time are read at most every
	// psiWindow, after a round.
	psiWindow   = 50 * time.Millisecond
	busyStall   = 0.2
	calmStall   = 0.05
	calmWindows = 10
	// Saturation: hotShare of a CPU a loop for hotFor; then ordinary for
	// minHold, doubling while it comes back hot within cleanFor.
	hotShare = 0.9
	hotFor   = time.Second
	minHold  = 5 * time.Second
	maxHold  = time.Minute
	cleanFor = time.Minute
)

// contention says from CPU pressure readings whether the CPUs are
// contended.
type contention struct {
	contended bool
	calm      int // calm readings in a row
}

// add takes the share of time some task waited for a CPU since the last
// reading, and reports whether the verdict changed.
func (c *contention) add(stall float64) (changed bool) {
	switch {
	case stall >= busyStall:
		c.calm = 0
		if !c.contended {
			c.contended = true
			return true
		}
	case stall < calmStall:
		c.calm++
		if c.contended && c.calm >= calmWindows {
			c.contended = false
			return true
		}
	default:
		c.calm = 0
	}
	return false
}

// saturation holds the process ordinary after it has used a whole CPU a
// loop while realtime, judged over windows of hotFor.
type saturation struct {
	el      time.Duration // of the window so far, realtime throughout
	used    float64       // CPUs' worth of time used in it
	held    time.Time     // ordinary until then
	hold    time.Duration // the next hold-off
	lastHot time.Time
}

// add takes a reading of el during which the process used share of its
// loops' CPUs, realtime or not, and reports whether it must now be held
// ordinary (it just turned hot).
func (s *saturation) add(now time.Time, el time.Duration, share float64, rt bool) (hot bool) {
	if !rt {
		s.el, s.used = 0, 0 // a window is realtime throughout
		return false
	}
	s.el += el
	s.used += share * float64(el)
	if s.el < hotFor {
		return false
	}
	share = s.used / float64(s.el)
	s.el, s.used = 0, 0
	if share < hotShare {
		return false
	}
	if s.hold == 0 || now.Sub(s.lastHot) > cleanFor+s.hold {
		s.hold = minHold
	} else {
		s.hold = min(2*s.hold, maxHold)
	}
	s.lastHot, s.held = now, now.Add(s.hold)
	return true
}

// holding reports whether the process is to stay ordinary at now.
func (s *saturation) holding(now time.Time) bool { return now.Before(s.held) }

// pressure reads the CPU pressure stall information.
type pressure struct {
	fd    int
	buf   [512]byte
	total uint64 // µs some task waited, at the last reading
}

func openPressure(path string) (*pressure, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	p := &pressure{fd: fd}
	if p.total, err = p.read(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return p, nil
}

// read returns the "some" total: µs during which some task waited.
func (p *pressure) read() (uint64, error) {
	n, err := unix.Pread(p.fd, p.buf[:], 0)
	if err != nil {
		return 0, err
	}
	return parsePressure(p.buf[:n])
}

// parsePressure finds total= on the "some" line of a PSI file.
func parsePressure(b []byte) (uint64, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	if !bytes.HasPrefix(line, []byte("some ")) {
		return 0, fmt.Errorf("pressure: no \"some\" line in %q", b)
	}
	_, v, ok := bytes.Cut(line, []byte(" total="))
	if !ok {
		return 0, fmt.Errorf("pressure: no total in %q", line)
	}
	v, _, _ = bytes.Cut(v, []byte(" "))
	return strconv.ParseUint(string(v), 10, 64)
}

// stall is the share of el during which some task waited, since the last
// reading.
func (p *pressure) stall(el time.Duration) (float64, error) {
	t, err := p.read()
	if err != nil {
		return 0, err
	}
	share := 0.0
	if el > 0 && t >= p.total {
		share = float64(time.Duration(t-p.total)*time.Microsecond) / float64(el)
	}
	p.total = t
	return share, nil
}

func (p *pressure) close() { unix.Close(p.fd) }

// cpuTime is the CPU time the process has used, all threads.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// priority is the process's realtime priority: the threads have it while
// the CPUs are contended and the process is not held ordinary.
type priority struct {
	prio  int
	loops int
	log   *slog.Logger
	next  atomic.Int64 // unix ns of the next reading

	mu     sync.Mutex
	psi    *pressure // nil: taken as contended always
	cont   contention
	sat    saturation
	at     time.Time     // of the last reading
	cpu    time.Duration // the process's, at the last reading
	on     bool
	warned bool
}

// newPriority starts the process ordinary where it can read the CPU
// pressure, realtime otherwise.
func newPriority(prio, loops int, psiPath string, log *slog.Logger) *priority {
	p := &priority{prio: prio, loops: loops, log: log, at: time.Now(), cpu: cpuTime()}
	psi, err := openPressure(psiPath)
	if err != nil {
		log.Info("no CPU pressure information: the daemon's threads are realtime all the time", "err", err)
		p.cont.contended = true
	} else {
		p.psi = psi
	}
	p.mu.Lock()
	p.update(p.at)
	p.mu.Unlock()
	return p
}

// tick takes a reading if psiWindow has passed (a loop's, after a round:
// an idle daemon reads nothing).
func (p *priority) tick(now time.Time) {
	next := p.next.Load()
	if now.UnixNano() < next || !p.next.CompareAndSwap(next, now.Add(psiWindow).UnixNano()) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cpu := cpuTime()
	p.reading(now, cpu)
	p.update(now)
}

// reading takes the CPU pressure and the process's CPU time cpu at now
// (p.mu held).
func (p *priority) reading(now time.Time, cpu time.Duration) {
	el := now.Sub(p.at)
	if el <= 0 {
		return
	}
	share := float64(cpu-p.cpu) / float64(el) / float64(p.loops)
	p.at, p.cpu = now, cpu
	if p.sat.add(now, el, share, p.on) {
		p.log.Warn("the daemon used a whole CPU a loop for a second (more frames than it can move): it runs as an ordinary process for a while, as the kernel hands such work to ksoftirqd", "for", p.sat.hold, "priority", p.prio)
	}
	if p.psi == nil {
		return
	}
	stall, err := p.psi.stall(el)
	if err != nil {
		p.log.Warn("CPU pressure unreadable: the daemon's threads are realtime all the time", "err", err)
		p.psi.close()
		p.psi, p.cont.contended = nil, true
		return
	}
	p.cont.add(stall)
}

// close leaves the process ordinary.
func (p *priority) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.psi != nil {
		p.psi.close()
		p.psi = nil
	}
	p.apply(false)
}

// update gives the threads what the state calls for (p.mu held).
func (p *priority) update(now time.Time) {
	p.apply(p.cont.contended && !p.sat.holding(now))
}

func (p *priority) apply(on bool) {
	if on == p.on {
		return
	}
	prio := 0
	if on {
		prio = p.prio
	}
	if err := rtsched.Process(prio); err != nil {
		if on && !p.warned {
			p.warned = true
			p.log.Warn("no realtime priority: the daemon's threads share the CPU as ordinary ones do, and a busy program can delay every session (give the daemon CAP_SYS_NICE, or an RLIMIT_RTPRIO)", "priority", p.prio, "err", err)
		}
		return
	}
	p.on = on
	p.log.Debug("scheduling", "realtime", on)
}
