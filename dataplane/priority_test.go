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
		if err != nil {
			return
		}
		// Only a "some" line's total gives a value, and the same one.
		line, _, _ := bytes.Cut(b, []byte("\n"))
		_, tail, ok := bytes.Cut(line, []byte(" total="))
		tok, _, _ := bytes.Cut(tail, []byte(" "))
		if w, werr := strconv.ParseUint(string(tok), 10, 64); !bytes.HasPrefix(line, []byte("some ")) || !ok || werr != nil || w != v {
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
// too; calmWindows quiet readings make them ordinary again, not one fewer;
// close leaves them ordinary. Without pressure information they are
// realtime at once; where the kernel does not bound realtime tasks, never.
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
	limit := filepath.Join(t.TempDir(), "sched_rt_runtime_us")
	os.WriteFile(limit, []byte("950000\n"), 0o600)
	var log bytes.Buffer
	sc, err := newScheduler(schedConfig{loops: 1, rtPrio: prio, psi: psi, rtLimit: limit}, slog.New(slog.NewTextHandler(&log, nil)))
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
	p := sc.rt
	now := p.at
	// reading: psiWindow in which some task waited stalled of the time.
	reading := func(stalled float64) {
		now = now.Add(psiWindow)
		setPSI(time.Duration(stalled * float64(psiWindow)))
		p.mu.Lock()
		p.reading(now)
		p.update()
		p.mu.Unlock()
	}
	reading(0.5)
	release := moreThreads(4)
	fifo, other := threadPolicies(t, prio)
	release()
	if other != 0 || fifo < 2 {
		t.Fatalf("contended: %d threads realtime, %d not", fifo, other)
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
	reading(1)
	sc.close()
	closed = true
	if fifo, _ := threadPolicies(t, prio); fifo != 0 {
		t.Fatalf("after close: %d threads realtime", fifo)
	}

	// No pressure information: realtime from the start.
	sc2, err := newScheduler(schedConfig{loops: 1, rtPrio: prio, psi: filepath.Join(t.TempDir(), "none"), rtLimit: limit}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fifo, other = threadPolicies(t, prio)
	sc2.close()
	if other != 0 {
		t.Fatalf("no PSI: %d threads realtime, %d not", fifo, other)
	}

	// No bound on realtime tasks: never realtime, and said so.
	os.WriteFile(limit, []byte("-1\n"), 0o600)
	log.Reset()
	sc3, err := newScheduler(schedConfig{loops: 1, rtPrio: prio, psi: filepath.Join(t.TempDir(), "none"), rtLimit: limit}, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	fifo, _ = threadPolicies(t, prio)
	sc3.close()
	if fifo != 0 || sc3.rt != nil {
		t.Fatalf("unbounded realtime: %d threads realtime", fifo)
	}
	if !bytes.Contains(log.Bytes(), []byte("does not bound realtime tasks")) {
		t.Errorf("not said:\n%s", log.String())
	}
}
