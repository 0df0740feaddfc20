package dataplane

import (
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/internal/fixture"
)

// TestLoad: a source is heavy over lightFrames frames in a window, stays
// heavy through the next window, and is light again after two quiet ones;
// a backlog (full batches of its own frames, demoteAfter in a row) is
// heavy too, but not full batches of frames handed to queues (n == 0).
func TestLoad(t *testing.T) {
	t0 := time.Now()
	var ld load
	ld.from = t0
	if ld.add(t0, lightFrames, false) {
		t.Fatal("heavy at lightFrames")
	}
	if !ld.add(t0.Add(time.Millisecond), 1, false) {
		t.Fatal("light over lightFrames")
	}
	if !ld.add(t0.Add(window+time.Millisecond), 0, false) {
		t.Error("light in the window after a heavy one")
	}
	if ld.add(t0.Add(4*window), 0, false) {
		t.Error("heavy after quiet windows")
	}
	var bl load
	for i := range demoteAfter {
		heavy := bl.add(t0, 1, true)
		if heavy != (i == demoteAfter-1) {
			t.Fatalf("full batch %d: heavy %v", i+1, heavy)
		}
	}
	var q load
	for range 2 * demoteAfter {
		if q.add(t0, 0, true) {
			t.Fatal("full batches handed to queues count as a backlog")
		}
	}
}

// testSource is an eventfd made readable on demand, and what its run saw.
type testSource struct {
	fd      int
	runs    atomic.Int32
	frames  int  // what run reports
	drain   bool // run empties the eventfd
	express atomic.Bool
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

func (ts *testSource) run(tn *turn) result {
	ts.runs.Add(1)
	ts.express.Store(tn.queue)
	if ts.drain {
		var b [8]byte
		unix.Read(ts.fd, b[:])
	}
	return result{frames: ts.frames, more: !ts.drain}
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

// TestScheduler: a source that is always busy moves to the bulk loop and
// keeps being served there; a quiet one stays in the express loop and is
// served each time it is ready; a removed source is never run again; a
// kicked source without an fd is served.
func TestScheduler(t *testing.T) {
	sc, err := newScheduler(1, true, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.close()
	busy := newTestSource(t, batchSize, false) // never drained: ready every round
	quiet := newTestSource(t, 1, true)
	bs, err := sc.add(busy.fd, busy.run)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := sc.add(quiet.fd, quiet.run)
	if err != nil {
		t.Fatal(err)
	}
	busy.ready()
	waitFor(t, "the busy source to move to the bulk loop", func() bool { return busy.runs.Load() > demoteAfter && !busy.express.Load() })
	if bs.l.Load() == sc.express {
		t.Fatal("busy source still in the express loop")
	}
	for i := range 20 {
		before := quiet.runs.Load()
		quiet.ready()
		waitFor(t, "the quiet source's turn", func() bool { return quiet.runs.Load() > before })
		if !quiet.express.Load() {
			t.Fatalf("ready %d: quiet source served by a bulk loop", i)
		}
	}
	if qs.l.Load() != sc.express {
		t.Fatal("quiet source left the express loop")
	}
	if n := busy.runs.Load(); n < 100 {
		t.Fatalf("busy source served %d times: starved", n)
	}
	if err := bs.remove(); err != nil {
		t.Fatal(err)
	}
	after := busy.runs.Load()
	quiet.ready() // a round of each loop goes by
	time.Sleep(20 * time.Millisecond)
	if n := busy.runs.Load(); n != after {
		t.Fatalf("removed source ran %d more times", n-after)
	}
	var kicked atomic.Int32
	ks, err := sc.addQueue(func(*turn) result { kicked.Add(1); return result{} })
	if err != nil {
		t.Fatal(err)
	}
	ks.kick()
	waitFor(t, "the kicked source's turn", func() bool { return kicked.Load() == 1 })
	if err := qs.remove(); err != nil {
		t.Fatal(err)
	}
	ks.remove()
}

// numbered is a numbered test frame of flow f (its source MAC's last byte).
func numbered(f byte, n uint32) []byte {
	b := fixture.Frame(int(n), 60)
	b[11] = f
	return b
}

// TestRxQueue: frames the express loop's side queues while a bulk loop
// delivers them arrive once each, in order within each flow; beyond the
// queue's room they are dropped and counted, never delivered out of order.
func TestRxQueue(t *testing.T) {
	_, _, s, _, dev := benchSession(t, encap.EncapUDP, benchCfg(false))
	dev.record = true
	sc, err := newScheduler(1, false, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.close()
	if s.rxq.src, err = sc.addQueue(s.drainRx); err != nil {
		t.Fatal(err)
	}
	const flows, each = 4, 20000
	for n := range uint32(each) {
		for f := range byte(flows) {
			fr := numbered(f, n)
			c := s.rxFlow(time.Now(), fr)
			s.enqueueRx(fr, len(fr), c.bucket)
		}
	}
	r := s.rxq.ring.Load()
	waitFor(t, "the queue to empty", func() bool { return r.done.Load() == r.tail.Load() })
	s.rxq.src.remove()
	drops := int(s.rxq.drops.Load())
	if len(dev.got)+drops != flows*each {
		t.Fatalf("%d delivered + %d dropped, %d queued", len(dev.got), drops, flows*each)
	}
	if drops == 0 {
		t.Log("no frame dropped: the bulk loop kept up")
	}
	last := map[byte]int64{}
	for _, fr := range dev.got {
		f, n := fr[11], int64(fixture.Number(fr))
		if p, ok := last[f]; ok && n <= p {
			t.Fatalf("flow %d: frame %d after %d", f, n, p)
		}
		last[f] = n
	}
	if len(last) != flows {
		t.Fatalf("frames of %d flows delivered, want %d", len(last), flows)
	}
	for b := range r.flows {
		if p := r.flows[b].pending.Load(); p != 0 {
			t.Fatalf("flow bucket %d: %d pending after the queue emptied", b, p)
		}
	}
	if b := r.bytes.Load(); b != 0 {
		t.Fatalf("%d bytes counted queued after the queue emptied", b)
	}
}
