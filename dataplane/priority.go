package dataplane

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
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
// What realtime threads may take is bounded: at most Tuning.Threads of them
// run Go code at once (the runtime's GOMAXPROCS; by default half the
// CPUs), and the kernel keeps a share of every CPU for ordinary tasks
// (kernel.sched_rt_runtime_us, 95% by default; the fair server since 6.12),
// so that a flood the daemon cannot keep up with takes at most that from
// the machine's programs. Where that bound is off (-1) the daemon does not
// go realtime. (A guard that made the process ordinary after a second at
// a whole CPU was measured and dropped: 64 TCP streams of one tunnel keep
// the daemon that busy, and ordinary among 128 iperf3 processes it served
// them at Jain's index 0.25 against 0.99.)

// Priority constants.
const (
	// The CPU pressure and the process's CPU time are read at most every
	// psiWindow, after a round.
	psiWindow   = 50 * time.Millisecond
	busyStall   = 0.2
	calmStall   = 0.05
	calmWindows = 10
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

// rtBounded reports whether the kernel keeps a share of each CPU from
// realtime tasks, by the sysctl file at path (kernel.sched_rt_runtime_us;
// -1: no bound). Unreadable, it is taken as the default bound.
func rtBounded(path string) bool {
	b, err := os.ReadFile(path)
	return err != nil || strings.TrimSpace(string(b)) != "-1"
}

// priority is the process's realtime priority: the threads have it while
// the CPUs are contended.
type priority struct {
	prio int
	log  *slog.Logger
	next atomic.Int64 // unix ns of the next reading

	mu     sync.Mutex
	psi    *pressure // nil: taken as contended always
	cont   contention
	at     time.Time // of the last reading
	on     bool
	warned bool
}

// newPriority starts the process ordinary where it can read the CPU
// pressure, realtime otherwise; nil where the kernel does not bound
// realtime tasks (rtLimit, the sysctl's file).
func newPriority(prio int, psiPath, rtLimit string, log *slog.Logger) *priority {
	if !rtBounded(rtLimit) {
		log.Warn("the kernel does not bound realtime tasks (kernel.sched_rt_runtime_us is -1): the daemon's threads stay ordinary, so that a flood cannot take whole CPUs", "priority", prio)
		return nil
	}
	p := &priority{prio: prio, log: log, at: time.Now()}
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

// tick takes a reading if psiWindow has passed (a loop's, after a round:
// an idle daemon reads nothing).
func (p *priority) tick(now time.Time) {
	next := p.next.Load()
	if now.UnixNano() < next || !p.next.CompareAndSwap(next, now.Add(psiWindow).UnixNano()) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reading(now)
	p.update()
}

// reading takes the CPU pressure at now (p.mu held).
func (p *priority) reading(now time.Time) {
	el := now.Sub(p.at)
	if el <= 0 || p.psi == nil {
		return
	}
	p.at = now
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
func (p *priority) update() { p.apply(p.cont.contended) }

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
