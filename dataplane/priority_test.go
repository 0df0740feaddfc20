package dataplane

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/internal/privtest"
	"github.com/l2tpu/l2tpu/internal/rtsched"
)

// TestSaturation: a loop is hot after hotWindows windows busy at least
// hotShare of the time (not after one fewer, nor when a window in between
// is less busy), and calm after a window under calmShare (not one between
// the two shares).
func TestSaturation(t *testing.T) {
	t0 := time.Now()
	var s saturation
	s.from = t0
	now := t0
	window := func(share float64) (hot, changed bool) {
		start := now
		now = now.Add(satWindow)
		return s.add(start.Add(time.Duration(float64(satWindow)*(1-share))), now)
	}
	for i := range hotWindows - 1 {
		if hot, changed := window(0.99); hot || changed {
			t.Fatalf("window %d: hot already", i+1)
		}
	}
	window(0.9) // not busy enough: the run starts over
	for i := range hotWindows - 1 {
		if hot, _ := window(1); hot {
			t.Fatalf("hot after %d busy windows following a quieter one", i+1)
		}
	}
	if hot, changed := window(1); !hot || !changed {
		t.Fatalf("not hot after %d busy windows: %v %v", hotWindows, hot, changed)
	}
	if hot, changed := window(0.8); !hot || changed {
		t.Fatal("calm at a share over calmShare")
	}
	if hot, changed := window(0.5); hot || !changed {
		t.Fatal("not calm after a quiet window")
	}
	// Rounds shorter than a window add up.
	for range 100 {
		start := now
		now = now.Add(satWindow / 10)
		s.add(start, now)
	}
	if !s.hot {
		t.Fatal("not hot after many short busy rounds")
	}
}

// TestContention: contended at once at busyStall; calm again only after
// calmWindows readings under calmStall in a row (one between the two
// starts the count over).
func TestContention(t *testing.T) {
	var c contention
	if c.add(busyStall/2) || c.contended {
		t.Fatal("contended under busyStall")
	}
	if !c.add(busyStall) || !c.contended {
		t.Fatal("not contended at busyStall")
	}
	for i := range calmWindows - 1 {
		if c.add(0) {
			t.Fatalf("calm after %d quiet readings", i+1)
		}
	}
	c.add((busyStall + calmStall) / 2) // neither: the count starts over
	for i := range calmWindows - 1 {
		if c.add(calmStall / 2) {
			t.Fatalf("calm after %d quiet readings following a middling one", i+1)
		}
	}
	if !c.add(0) || c.contended {
		t.Fatalf("not calm after %d quiet readings", calmWindows)
	}
}

const psiSample = "some avg10=1.25 avg60=14.73 avg300=32.78 total=800082991\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"

func TestParsePressure(t *testing.T) {
	if v, err := parsePressure([]byte(psiSample)); err != nil || v != 800082991 {
		t.Fatalf("%d %v", v, err)
	}
	for _, bad := range []string{"", "full avg10=0 total=5\n", "some avg10=0.00\n", "some total=x\n", "some total=-1\n"} {
		if v, err := parsePressure([]byte(bad)); err == nil {
			t.Errorf("%q: %d, no error", bad, v)
		}
	}
}

func FuzzParsePressure(f *testing.F) {
	f.Add([]byte(psiSample))
	f.Add([]byte("some total=1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parsePressure(b)
		if err == nil && !bytes.Contains(b, []byte("total="+strconv.FormatUint(v, 10))) {
			t.Fatalf("%d from %q", v, b)
		}
	})
}

// threadPolicies counts the process's threads that are SCHED_FIFO at prio,
// and the others.
func threadPolicies(t *testing.T, prio int) (fifo, other int) {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		if f, p, err := rtsched.Thread(tid); err == nil && f && p == prio {
			fifo++
		} else if err == nil {
			other++
		}
	}
	return fifo, other
}

// moreThreads makes the runtime start threads (goroutines blocked in
// system calls hold theirs) until release is called.
func moreThreads(n int) (release func()) {
	stop := make(chan struct{})
	for range n {
		var fds [2]int
		unix.Pipe(fds[:])
		go func() {
			var b [1]byte
			unix.Read(fds[0], b[:]) // blocks its thread
			unix.Close(fds[0])
		}()
		go func() { <-stop; unix.Write(fds[1], []byte{1}); unix.Close(fds[1]) }()
	}
	time.Sleep(50 * time.Millisecond)
	return func() { close(stop) }
}

// TestRealtimePriority, against a CPU pressure file of its own: the
// process starts ordinary (the control); once a reading shows contention
// every thread runs SCHED_FIFO at the priority, threads made afterwards
// too; a saturated loop makes them ordinary until it is calm; calmWindows
// quiet readings make them ordinary again, not one fewer; close leaves
// them ordinary. Without pressure information they are realtime at once.
func TestRealtimePriority(t *testing.T) {
	privtest.Require(t)
	const prio = 7
	psi := filepath.Join(t.TempDir(), "cpu")
	var total uint64
	setPSI := func(add time.Duration) {
		total += uint64(add / time.Microsecond)
		if err := os.WriteFile(psi, fmt.Appendf(nil, "some avg10=0.00 avg60=0.00 avg300=0.00 total=%d\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", total), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setPSI(0)
	var log bytes.Buffer
	sc, err := newScheduler(schedConfig{loops: 1, rtPrio: prio, psi: psi}, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			sc.close()
		}
	}()
	if fifo, _ := threadPolicies(t, prio); fifo != 0 {
		t.Fatalf("control: %d threads realtime before any contention", fifo)
	}
	now := sc.rt.psi.at
	reading := func(stalled time.Duration) {
		now = now.Add(psiWindow)
		setPSI(stalled)
		sc.rt.tick(now)
	}
	reading(psiWindow / 2) // half the time some task waited
	release := moreThreads(4)
	fifo, other := threadPolicies(t, prio)
	release()
	if other != 0 || fifo < 2 {
		t.Fatalf("contended: %d threads realtime, %d not", fifo, other)
	}
	sc.rt.hot(true)
	if fifo, _ := threadPolicies(t, prio); fifo != 0 {
		t.Fatalf("saturated: %d threads still realtime", fifo)
	}
	if !bytes.Contains(log.Bytes(), []byte("ordinary process")) {
		t.Errorf("saturation not logged:\n%s", log.String())
	}
	sc.rt.hot(false)
	if _, other := threadPolicies(t, prio); other != 0 {
		t.Fatalf("calm loop: %d threads not realtime", other)
	}
	for i := range calmWindows - 1 {
		reading(0)
		if _, other := threadPolicies(t, prio); other != 0 {
			t.Fatalf("after %d quiet readings: %d threads not realtime", i+1, other)
		}
	}
	reading(0)
	if fifo, _ := threadPolicies(t, prio); fifo != 0 {
		t.Fatalf("after %d quiet readings: %d threads still realtime", calmWindows, fifo)
	}
	reading(psiWindow)
	sc.close()
	closed = true
	if fifo, _ := threadPolicies(t, prio); fifo != 0 {
		t.Fatalf("after close: %d threads realtime", fifo)
	}

	// No pressure information: realtime from the start.
	sc2, err := newScheduler(schedConfig{loops: 1, rtPrio: prio, psi: filepath.Join(t.TempDir(), "none")}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fifo, other = threadPolicies(t, prio)
	sc2.close()
	if other != 0 {
		t.Fatalf("no PSI: %d threads realtime, %d not", fifo, other)
	}
}
