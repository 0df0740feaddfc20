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
// checks in a row. Where the kernel has no PSI, always. And never while a
// loop is saturated (loop.go).

// Priority constants.
const (
	// A loop is saturated after hotWindows windows of satWindow busy at
	// least hotShare of the time, calm again after one under calmShare.
	satWindow  = 100 * time.Millisecond
	hotShare   = 0.95
	hotWindows = 10
	calmShare  = 0.7
	// The CPU pressure is read at most every psiWindow, after a round.
	psiWindow   = 50 * time.Millisecond
	busyStall   = 0.2
	calmStall   = 0.05
	calmWindows = 10
)

// saturation is how busy a loop has been, window by window.
type saturation struct {
	from time.Time     // the window's start
	busy time.Duration // in it
	run  int           // hot windows in a row
	hot  bool
}

// add counts a round that ran from start to end and reports, at the end of
// a window, whether the loop is hot and whether that changed.
func (s *saturation) add(start, end time.Time) (hot, changed bool) {
	s.busy += end.Sub(start)
	el := end.Sub(s.from)
	if el < satWindow {
		return s.hot, false
	}
	share := float64(s.busy) / float64(el)
	s.from, s.busy = end, 0
	switch {
	case share >= hotShare:
		s.run++
	case share < calmShare:
		s.run = 0
		if s.hot {
			s.hot = false
			return false, true
		}
		return false, false
	default:
		s.run = 0
	}
	if !s.hot && s.run >= hotWindows {
		s.hot = true
		return true, true
	}
	return s.hot, false
}

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

// pressure reads the CPU pressure stall information.
type pressure struct {
	fd    int
	buf   [512]byte
	total uint64 // µs some task waited, at the last reading
	at    time.Time
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
	p.at = time.Now()
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

// stall is the share of time some task waited since the last reading.
func (p *pressure) stall(now time.Time) (float64, error) {
	t, err := p.read()
	if err != nil {
		return 0, err
	}
	el := now.Sub(p.at)
	share := 0.0
	if el > 0 && t >= p.total {
		share = float64(time.Duration(t-p.total)*time.Microsecond) / float64(el)
	}
	p.total, p.at = t, now
	return share, nil
}

func (p *pressure) close() { unix.Close(p.fd) }

// priority is the process's realtime priority: the threads have it while
// the CPUs are contended and no loop is saturated.
type priority struct {
	prio int
	log  *slog.Logger
	next atomic.Int64 // unix ns of the next pressure reading

	mu     sync.Mutex
	psi    *pressure // nil: taken as contended always
	cont   contention
	hots   int // saturated loops
	on     bool
	warned bool
}

// newPriority starts the process ordinary where it can read the CPU
// pressure, realtime otherwise.
func newPriority(prio int, psiPath string, log *slog.Logger) *priority {
	p := &priority{prio: prio, log: log}
	psi, err := openPressure(psiPath)
	if err != nil {
		log.Info("no CPU pressure information: the daemon's threads are realtime all the time", "err", err)
		p.cont.contended = true
	} else {
		p.psi = psi
	}
	p.mu.Lock()
	p.update()
	p.mu.Unlock()
	return p
}

// tick reads the CPU pressure if psiWindow has passed (a loop's, after a
// round: an idle daemon reads nothing).
func (p *priority) tick(now time.Time) {
	next := p.next.Load()
	if now.UnixNano() < next || p.psi == nil || !p.next.CompareAndSwap(next, now.Add(psiWindow).UnixNano()) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.psi == nil {
		return
	}
	stall, err := p.psi.stall(now)
	if err != nil {
		p.log.Warn("CPU pressure unreadable: the daemon's threads are realtime all the time", "err", err)
		p.psi.close()
		p.psi, p.cont.contended = nil, true
	} else if !p.cont.add(stall) {
		return
	}
	p.update()
}

// hot counts a loop turning saturated (on) or calm.
func (p *priority) hot(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.hots++
		if p.hots == 1 {
			p.log.Warn("a loop is busy all the time (more frames than the daemon can move): the daemon runs as an ordinary process until it is not, as the kernel hands such work to ksoftirqd", "priority", p.prio)
		}
	} else if p.hots--; p.hots == 0 {
		p.log.Info("the loops keep up again", "priority", p.prio)
	}
	p.update()
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
func (p *priority) update() { p.apply(p.cont.contended && p.hots == 0) }

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
