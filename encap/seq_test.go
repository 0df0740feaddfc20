package encap

import (
	"fmt"
	"testing"
	"time"
)

// step feeds one packet (item = its index in the script) and checks the
// verdict, the rx_oos_packets flag, what Next then releases at the same
// instant, and send_seq afterwards.
type step struct {
	seq     bool   // has a sequence number
	ns      uint32 // its value
	at      int64  // arrival time (ms)
	v       Verdict
	oos     bool
	out     []uint32 // ns of what Next releases (reordering)
	sendSeq bool
}

func sq(ns uint32, v Verdict, sendSeq bool) step {
	return step{seq: true, ns: ns, v: v, sendSeq: sendSeq}
}

func unsq(v Verdict, sendSeq bool) step { return step{v: v, sendSeq: sendSeq} }

func run(t *testing.T, s *Seq[uint32], steps []step) {
	t.Helper()
	for i, st := range steps {
		now := st.at * int64(time.Millisecond)
		v, oos := s.Receive(Data{HasSeq: st.seq, NS: st.ns}, st.ns, now)
		var out []uint32
		for {
			it, nv, ok := s.Next(now)
			if !ok {
				break
			}
			if nv == Deliver {
				out = append(out, it)
			}
		}
		if v != st.v || oos != st.oos || fmt.Sprint(out) != fmt.Sprint(st.out) || s.SendSeq() != st.sendSeq {
			t.Fatalf("step %d (seq=%v ns=%#x at=%dms): verdict %v oos %v out %v sendSeq %v; want %v %v %v %v",
				i, st.seq, st.ns, st.at, v, oos, out, s.SendSeq(), st.v, st.oos, st.out, st.sendSeq)
		}
	}
}

func TestSeqLACNegotiation(t *testing.T) {
	// seq none: a sequenced packet turns send_seq on, an unsequenced one off.
	s := NewSeq[uint32](SeqConfig{})
	run(t, s, []step{
		unsq(Deliver, false),
		sq(0, Deliver, true),
		sq(1, Deliver, true),
		unsq(Deliver, false),
		sq(2, Deliver, true),
	})
	// seq send against an unsequenced peer: off after its first packet.
	s = NewSeq[uint32](SeqConfig{SendSeq: true})
	run(t, s, []step{unsq(Deliver, false), unsq(Deliver, false)})
	// seq recv: unsequenced packets are rx_seq_discards; send_seq stays
	// as it is (recv is checked first).
	s = NewSeq[uint32](SeqConfig{RecvSeq: true})
	run(t, s, []step{unsq(DropSeq, false), sq(7, Deliver, true), unsq(DropSeq, true)})
	// seq both stays on.
	s = NewSeq[uint32](SeqConfig{SendSeq: true, RecvSeq: true})
	run(t, s, []step{sq(0, Deliver, true), unsq(DropSeq, true)})
	// LNS mode (not settable from ip l2tp): no negotiation; sending seq and
	// receiving none is the peer's fault: discard.
	s = NewSeq[uint32](SeqConfig{LNSMode: true})
	run(t, s, []step{sq(0, Deliver, false), unsq(Deliver, false)})
	s = NewSeq[uint32](SeqConfig{LNSMode: true, SendSeq: true})
	run(t, s, []step{unsq(DropSeq, true), sq(0, Deliver, true)})
}

func TestSeqTransmit(t *testing.T) {
	s := NewSeq[uint32](SeqConfig{})
	if w := s.NextSublayer(); w != 0 {
		t.Fatalf("not sending: %#x", w)
	}
	s.sendSeq.Store(true)
	for i, want := range []uint32{0x40000000, 0x40000001, 0x40000002} {
		if w := s.NextSublayer(); w != want {
			t.Fatalf("packet %d: %#x, want %#x", i, w, want)
		}
	}
	// The counter is 24 bits: it wraps to 0.
	s.ns.Store(SeqMask)
	if w := s.NextSublayer(); w != 0x40ffffff {
		t.Fatalf("%#x", w)
	}
	if w := s.NextSublayer(); w != 0x40000000 {
		t.Fatalf("after wrap %#x", w)
	}
	if snap := s.Snapshot(); snap.NS != 1 || !snap.SendSeq {
		t.Fatalf("%+v", snap)
	}
	// A peer's unsequenced packet stops the numbering; ns is kept.
	s.Receive(Data{}, 0, 0)
	if w := s.NextSublayer(); w != 0 {
		t.Fatalf("%#x", w)
	}
}

func TestSeqInOrderAndWrap(t *testing.T) {
	s := NewSeq[uint32](SeqConfig{SendSeq: true, RecvSeq: true})
	// The first packet is accepted whatever its number (here near the
	// top of the space), and numbering wraps at 2^24.
	run(t, s, []step{
		sq(0xfffffd, Deliver, true),
		sq(0xfffffe, Deliver, true),
		sq(0xffffff, Deliver, true),
		sq(0, Deliver, true),
		sq(1, Deliver, true),
	})
	if s.Snapshot().NR != 2 {
		t.Fatalf("nr %d", s.Snapshot().NR)
	}
}

func TestSeqFirstPacketUpperHalf(t *testing.T) {
	// Deliberate difference: the kernel would drop this (window vs nr=0).
	s := NewSeq[uint32](SeqConfig{SendSeq: true, RecvSeq: true})
	run(t, s, []step{sq(0x900000, Deliver, true), sq(0x900001, Deliver, true)})
}

func TestSeqWindow(t *testing.T) {
	s := NewSeq[uint32](SeqConfig{SendSeq: true, RecvSeq: true})
	run(t, s, []step{
		sq(10, Deliver, true), // nr = 11
		// Behind nr: forward distance >= 2^23-1, dropped counting only rx_errors.
		sq(10, DropWindow, true),
		sq(5, DropWindow, true),
		sq(11+SeqWindow, DropWindow, true),
		// The last number inside the window is only out of sequence.
		sq(11+SeqWindow-1, DropSeq, true),
		sq(11, Deliver, true),
	})
}

func TestSeqResync(t *testing.T) {
	s := NewSeq[uint32](SeqConfig{SendSeq: true, RecvSeq: true})
	// nr = 5 after these.
	run(t, s, []step{sq(3, Deliver, true), sq(4, Deliver, true)})
	// The peer jumps ahead to 100: the first 5 consecutive out-of-sequence
	// packets are dropped (rx_seq_discards), the 6th resynchronises.
	run(t, s, []step{
		sq(100, DropSeq, true), // run 0
		sq(101, DropSeq, true), // 1
		sq(102, DropSeq, true), // 2
		sq(103, DropSeq, true), // 3
		sq(104, DropSeq, true), // 4
		sq(105, Deliver, true), // 5 > 4: nr = 105, delivered, nr = 106
		sq(106, Deliver, true),
	})
	// A run broken by a non-consecutive packet starts again.
	run(t, s, []step{
		sq(200, DropSeq, true),
		sq(201, DropSeq, true),
		sq(203, DropSeq, true), // not 202: run reset to 0
		sq(204, DropSeq, true),
		sq(205, DropSeq, true),
		sq(206, DropSeq, true),
		sq(207, DropSeq, true), // run 4
		sq(208, Deliver, true), // run 5
	})
	// An occasional loss without a run just drops the early packets
	// until the expected one comes... the kernel never skips a gap on its
	// own without reordering: 209 is expected.
	run(t, s, []step{sq(210, DropSeq, true), sq(209, Deliver, true), sq(210, Deliver, true)})
}

func TestSeqResyncAcrossWrap(t *testing.T) {
	s := NewSeq[uint32](SeqConfig{RecvSeq: true})
	run(t, s, []step{sq(0xfffff0, Deliver, true)})
	var steps []step
	for i := uint32(0); i < 5; i++ {
		steps = append(steps, sq((0xfffffd+i)&SeqMask, DropSeq, true))
	}
	steps = append(steps, sq(2, Deliver, true), sq(3, Deliver, true))
	run(t, s, steps)
}

func rs(ns uint32, at int64, v Verdict, oos bool, out ...uint32) step {
	return step{seq: true, ns: ns, at: at, v: v, oos: oos, out: out, sendSeq: true}
}

func TestReorder(t *testing.T) {
	s := NewSeq[uint32](SeqConfig{SendSeq: true, RecvSeq: true, ReorderTimeout: 10 * time.Millisecond})
	run(t, s, []step{
		rs(0, 0, Deliver, false),
		rs(2, 1, Queued, false),
		rs(3, 1, Queued, false),
		rs(1, 2, Queued, true, 1, 2, 3), // overtakes 2 and 3: rx_oos_packets
		rs(4, 3, Deliver, false),
		rs(6, 3, Queued, false),
		rs(5, 3, Queued, true, 5, 6),
		// Duplicate of a delivered packet: behind nr, window drop.
		rs(5, 4, DropWindow, false),
		// Duplicate of a held packet: rx_seq_discards.
		rs(9, 4, Queued, false),
		rs(9, 4, DropSeq, false),
		rs(8, 5, Queued, true),
	})
	if d, ok := s.Deadline(); !ok || d != int64(14*time.Millisecond) {
		t.Fatalf("deadline %v %v", d, ok)
	}
	// Before the deadline nothing moves; at it, the gap (7) is declared
	// lost and the held packets are delivered, not dropped.
	if _, _, ok := s.Next(int64(13 * time.Millisecond)); ok {
		t.Fatal("released early")
	}
	var out []uint32
	for {
		it, v, ok := s.Next(int64(14 * time.Millisecond))
		if !ok {
			break
		}
		if v != Deliver {
			t.Fatalf("item %d dropped", it)
		}
		out = append(out, it)
	}
	if fmt.Sprint(out) != "[8 9]" {
		t.Fatalf("released %v", out)
	}
	if _, ok := s.Deadline(); ok {
		t.Fatal("deadline with an empty buffer")
	}
	run(t, s, []step{rs(10, 20, Deliver, false)})
}

func TestReorderWrap(t *testing.T) {
	// Plain integer sorting (the kernel's) would put 0 and 1 before 0xffffff.
	s := NewSeq[uint32](SeqConfig{SendSeq: true, ReorderTimeout: time.Second})
	run(t, s, []step{
		rs(0xfffffe, 0, Deliver, false),
		rs(1, 0, Queued, false),
		rs(0, 0, Queued, true),
		rs(0xffffff, 0, Queued, true, 0xffffff, 0, 1),
		rs(2, 0, Deliver, false),
	})
}

func TestReorderFirstPacketAndGapAtStart(t *testing.T) {
	s := NewSeq[uint32](SeqConfig{SendSeq: true, ReorderTimeout: 5 * time.Millisecond})
	run(t, s, []step{
		rs(50, 0, Deliver, false), // first packet sets nr
		rs(49, 1, DropWindow, false),
		rs(52, 1, Queued, false),
		rs(53, 2, Queued, false),
		// Oldest held (52, at 1ms) times out at 6ms: 51 is lost.
		rs(60, 6, Queued, false, 52, 53),
	})
	// 60 now waits for 54..59 with its own clock.
	if d, _ := s.Deadline(); d != int64(11*time.Millisecond) {
		t.Fatalf("deadline %v", d)
	}
}

func TestReorderFullBuffer(t *testing.T) {
	s := NewSeq[uint32](SeqConfig{SendSeq: true, ReorderTimeout: time.Hour, ReorderCap: 4})
	run(t, s, []step{
		rs(0, 0, Deliver, false),
		rs(2, 0, Queued, false),
		rs(3, 0, Queued, false),
		rs(4, 0, Queued, false),
		// The buffer is full: the gap (1) is declared lost at once.
		rs(5, 0, Queued, false, 2, 3, 4, 5),
	})
	// A caller that does not drain is refused, never grown past cap.
	s2 := NewSeq[uint32](SeqConfig{ReorderTimeout: time.Hour, ReorderCap: 2})
	s2.Receive(Data{HasSeq: true, NS: 0}, 0, 0)
	s2.Receive(Data{HasSeq: true, NS: 2}, 2, 0)
	s2.Receive(Data{HasSeq: true, NS: 3}, 3, 0)
	if v, _ := s2.Receive(Data{HasSeq: true, NS: 4}, 4, 0); v != DropSeq {
		t.Fatalf("undrained full buffer: %v", v)
	}
	n := 0
	for {
		if _, ok := s2.Purge(); !ok {
			break
		}
		n++
	}
	if n != 2 || s2.Snapshot().Queued != 0 {
		t.Fatalf("purged %d", n)
	}
}

func TestReorderUnsequencedPassesThrough(t *testing.T) {
	s := NewSeq[uint32](SeqConfig{ReorderTimeout: time.Second})
	run(t, s, []step{
		rs(0, 0, Deliver, false),
		rs(2, 0, Queued, false),
		{seq: false, v: Deliver, sendSeq: false},
	})
	if s.Snapshot().Queued != 1 {
		t.Fatal("held packet lost")
	}
}

func TestVerdictStrings(t *testing.T) {
	for v, want := range map[Verdict]string{Deliver: "deliver", Queued: "queued", DropSeq: "drop-seq", DropWindow: "drop-window", 9: "verdict?"} {
		if v.String() != want {
			t.Errorf("%d: %s", v, v)
		}
	}
}

// TestReorderForgedJump: with reordering, one sequenced packet far ahead
// (forged, or a stray) is held, then dropped at the timeout: the expected
// number stays and the session's traffic goes on. A peer that really
// jumped (restarted ahead of its last checkpoint) sends a run of
// consecutive numbers, even one packet per timeout, and is resynchronised
// to after more than SeqOOSMax of them, as without reordering.
func TestReorderForgedJump(t *testing.T) {
	const to = int64(10 * time.Millisecond)
	s := NewSeq[uint32](SeqConfig{RecvSeq: true, ReorderTimeout: time.Duration(to)})
	drain := func(now int64) (delivered, dropped []uint32) {
		for {
			it, v, ok := s.Next(now)
			if !ok {
				return
			}
			if v == Deliver {
				delivered = append(delivered, it)
			} else {
				dropped = append(dropped, it)
			}
		}
	}
	now := int64(0)
	for ns := uint32(0); ns < 4; ns++ {
		if v, _ := s.Receive(Data{HasSeq: true, NS: ns}, ns, now); v != Deliver {
			t.Fatalf("ns %d: %v", ns, v)
		}
	}
	far := uint32(1 << 22)
	if v, _ := s.Receive(Data{HasSeq: true, NS: far}, far, now); v != Queued {
		t.Fatalf("far packet: %v", v)
	}
	now += to
	if del, drop := drain(now); len(del) != 0 || fmt.Sprint(drop) != fmt.Sprint([]uint32{far}) {
		t.Fatalf("at the timeout: delivered %v dropped %v", del, drop)
	}
	// The session goes on where it was.
	if v, _ := s.Receive(Data{HasSeq: true, NS: 4}, 4, now); v != Deliver {
		t.Fatalf("ns 4 after the forged packet: %v", v)
	}
	// A real jump: one packet per timeout, consecutive numbers.
	var got []uint32
	for i := range uint32(SeqOOSMax + 3) {
		ns := far + 100 + i
		if v, _ := s.Receive(Data{HasSeq: true, NS: ns}, ns, now); v == Deliver {
			got = append(got, ns)
			continue
		}
		now += to
		del, _ := drain(now)
		got = append(got, del...)
	}
	if len(got) == 0 || got[0] != far+100+SeqOOSMax+1 || got[len(got)-1] != far+100+SeqOOSMax+2 {
		t.Fatalf("after a real jump delivered %v", got)
	}
}
