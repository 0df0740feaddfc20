package dataplane

import (
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testSource is an eventfd made readable on demand, and what its run saw.
type testSource struct {
	fd       int
	runs     atomic.Int32
	frames   int  // what run reports
	drain    bool // run empties the eventfd
	sessions int  // what run reports
	onRun    func()
}

func newTestSource(t *testing.T, frames int, drain bool) *testSource {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &testSource{fd: fd, frames: frames, drain: drain}
}

func (ts *testSource) ready() {
	one := [8]byte{1}
	unix.Write(ts.fd, one[:])
}

func (ts *testSource) run(*turn) result {
	ts.runs.Add(1)
	if ts.onRun != nil {
		ts.onRun()
	}
	if ts.drain {
		var b [8]byte
		unix.Read(ts.fd, b[:])
	}
	return result{frames: ts.frames, more: !ts.drain, sessions: ts.sessions}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestScheduler: a source that is always busy is served round after round,
// and a quiet one beside it in the same loop each time it is ready, within
// a round of the busy one's (it never waits for the busy one to drain); a
// removed source is never run again; a kicked source is served though its
// fd is not ready.
func TestScheduler(t *testing.T) {
	sc, err := newScheduler(schedConfig{loops: 1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.close()
	busy := newTestSource(t, batchSize, false) // never drained: ready every round
	quiet := newTestSource(t, 1, true)
	// The busy source's own turn makes the quiet one ready (so no
	// timing is involved): the quiet one must be served in the next
	// round, so the busy one runs at most once more before it.
	var readyAt, waited atomic.Int32
	readyAt.Store(-1)
	busy.onRun = func() {
		if n := busy.runs.Load(); n%10 == 0 && readyAt.Load() < 0 {
			readyAt.Store(n)
			quiet.ready()
		}
	}
	quiet.onRun = func() {
		if at := readyAt.Load(); at >= 0 {
			waited.Store(max(waited.Load(), busy.runs.Load()-at))
			readyAt.Store(-1)
		}
	}
	bs, err := sc.add(busy.fd, busy.run)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := sc.add(quiet.fd, quiet.run)
	if err != nil {
		t.Fatal(err)
	}
	busy.ready()
	waitFor(t, "20 turns of the quiet source", func() bool { return quiet.runs.Load() >= 20 })
	if n := waited.Load(); n > 1 {
		t.Fatalf("the quiet source waited %d turns of the busy one", n)
	}
	if n := busy.runs.Load(); n < 20 {
		t.Fatalf("busy source served %d times: starved", n)
	}
	if err := bs.remove(); err != nil {
		t.Fatal(err)
	}
	after := busy.runs.Load()
	quiet.ready() // a round goes by
	time.Sleep(20 * time.Millisecond)
	if n := busy.runs.Load(); n != after {
		t.Fatalf("removed source ran %d more times", n-after)
	}
	// Kicked: served once though its fd never becomes ready.
	kicked := newTestSource(t, 0, true)
	ks, err := sc.add(kicked.fd, kicked.run)
	if err != nil {
		t.Fatal(err)
	}
	ks.kick()
	waitFor(t, "the kicked source's turn", func() bool { return kicked.runs.Load() == 1 })
	if err := qs.remove(); err != nil {
		t.Fatal(err)
	}
	ks.remove()
}

// TestSchedulerWeights: a source that brought frames of n sessions in a
// round (a tunnel's socket) serves n batches the next, where a source of
// one serves one: each busy session moves a batch a round.
func TestSchedulerWeights(t *testing.T) {
	sc, err := newScheduler(schedConfig{loops: 1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.close()
	shared := newTestSource(t, batchSize, false)
	shared.sessions = 2 // each batch brings two sessions not yet seen that round
	single := newTestSource(t, batchSize, false)
	stop := make(chan struct{})
	var ratio, at100 atomic.Int32
	single.onRun = func() {
		switch single.runs.Load() {
		case 100:
			at100.Store(shared.runs.Load())
		case 200:
			ratio.Store((shared.runs.Load() - at100.Load()) / 100)
			close(stop)
		}
	}
	if _, err := sc.add(shared.fd, shared.run); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.add(single.fd, single.run); err != nil {
		t.Fatal(err)
	}
	shared.ready()
	single.ready()
	<-stop
	// Weights grow 1, 2, 4, ... to maxWeight: from the single source's
	// 100th round to its 200th the shared one served nearly maxWeight
	// batches a round.
	if r := ratio.Load(); r < maxWeight/2 || r > maxWeight {
		t.Fatalf("the source of many sessions served %d batches for each of the single source's", r)
	}
}

// TestSchedulerSpreads: with several loops, sources go to the one with the
// fewest.
func TestSchedulerSpreads(t *testing.T) {
	sc, err := newScheduler(schedConfig{loops: 3}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.close()
	var srcs []*source
	for range 6 {
		ts := newTestSource(t, 0, true)
		s, err := sc.add(ts.fd, ts.run)
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, s)
	}
	for i, l := range sc.loops {
		if n := l.count.Load(); n != 2 {
			t.Errorf("loop %d: %d sources, want 2", i, n)
		}
	}
	for _, s := range srcs {
		s.remove()
	}
}
