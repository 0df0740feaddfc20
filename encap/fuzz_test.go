package encap

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// fuzzSession derives a session from two fuzz bytes.
func fuzzSession(cfg byte, sid uint32, ck uint64) Session {
	s := Session{SessionID: sid | 1, PeerSessionID: sid | 1}
	if cfg&1 != 0 {
		s.Encap = EncapIP
	}
	if cfg&2 != 0 {
		s.L2Spec = L2SpecDefault
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], ck)
	switch (cfg >> 2) & 3 {
	case 1:
		s.PeerCookie, _ = NewCookie(b[:4])
	case 2, 3:
		s.PeerCookie, _ = NewCookie(b[:])
	}
	s.Cookie = s.PeerCookie
	return s
}

// FuzzDecode: the receive path never panics, and a decoded packet is
// consistent; what a session encodes, its mirror decodes to the same frame.
func FuzzDecode(f *testing.F) {
	f.Add(byte(0), uint32(1), uint64(0), []byte{0, 3, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add(byte(0b1011), uint32(0x1a2b3c4d), uint64(0xd0d1d2d3d4d5d6d7), []byte{0x1a, 0x2b, 0x3c, 0x4d, 0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0x40, 0, 0, 1, 0xff})
	f.Add(byte(0b0110), uint32(7), uint64(0xa1a2a3a4), []byte{0x80, 3, 0, 0})
	f.Add(byte(1), uint32(0), uint64(0), []byte{0, 0, 0, 0, 0xc8, 3})
	f.Fuzz(func(t *testing.T, cfg byte, sid uint32, ck uint64, pkt []byte) {
		s := fuzzSession(cfg, sid, ck)
		rx := NewRxHeader(&s)
		id, ver, r := Peek(s.Encap, pkt)
		if r == OK {
			d, r := rx.Decode(pkt, ver)
			if r == OK {
				if d.Offset != s.RxHeaderLen() || d.Offset > len(pkt) {
					t.Fatalf("offset %d, header %d, len %d", d.Offset, s.RxHeaderLen(), len(pkt))
				}
				if d.HasSeq && (s.L2Spec != L2SpecDefault || d.NS > SeqMask) {
					t.Fatalf("seq %+v with %v", d, s.L2Spec)
				}
			} else if r != Invalid && r != Truncated && r != CookieMismatch {
				t.Fatalf("Decode result %v", r)
			}
		} else if id != 0 {
			t.Fatalf("non-OK peek returned session %d", id)
		}
		// Round trip: the packet's bytes as a frame, sent by s, received
		// by s (same cookies both ways).
		tx := NewTxHeader(&s)
		ns := uint32(len(pkt)) * 7919
		msg := tx.Append(nil, SublayerWord(cfg&0x80 != 0, ns), pkt)
		id, ver, r = Peek(s.Encap, msg)
		if len(msg) >= udpMinLen || s.Encap == EncapIP {
			if r != OK || id != s.PeerSessionID {
				t.Fatalf("peek own packet: %v %d", r, id)
			}
			d, r := rx.Decode(msg, ver)
			if r != OK || !bytes.Equal(msg[d.Offset:], pkt) {
				t.Fatalf("round trip: %v %+v", r, d)
			}
			if s.L2Spec == L2SpecDefault && (d.HasSeq != (cfg&0x80 != 0) || (d.HasSeq && d.NS != ns&SeqMask)) {
				t.Fatalf("seq round trip: %+v", d)
			}
		}
	})
}

// FuzzSeq drives the sequence state with an arbitrary script and checks:
// no panics; the buffer stays within its capacity; every packet is
// delivered, dropped, still held or purged exactly once; and with
// reordering, delivered sequence numbers always move forward (wrap-aware,
// by at most the window, nr being one past the last delivered).
func FuzzSeq(f *testing.F) {
	f.Add(byte(0), []byte{0x80, 0, 0x81, 1, 0x82, 3, 0x83, 2})
	f.Add(byte(0x0f), []byte{0x80, 0, 0x82, 2, 0x81, 1, 0x10, 0x80, 9})
	f.Add(byte(0x07), []byte{0xff, 0xff, 0xff, 0x80, 0, 0x80, 1, 0x40, 0x90, 5})
	f.Fuzz(func(t *testing.T, cfg byte, script []byte) {
		c := SeqConfig{SendSeq: cfg&1 != 0, RecvSeq: cfg&2 != 0, LNSMode: cfg&0x10 != 0}
		reorder := cfg&4 != 0
		if reorder {
			c.ReorderTimeout = time.Duration(cfg>>5+1) * time.Millisecond
			c.ReorderCap = int(cfg>>5) + 2
		}
		s := NewSeq[int](c)
		seen := make(map[int]bool)
		var now int64
		var ns uint32
		var last uint32
		delivered := false
		deliver := func(it int, n uint32, seq bool) {
			if seen[it] {
				t.Fatalf("item %d delivered twice", it)
			}
			seen[it] = true
			if reorder && seq {
				if delivered {
					if d := (n - last) & SeqMask; d == 0 || d > SeqWindow {
						t.Fatalf("delivery went from %d to %d", last, n)
					}
				}
				last, delivered = n, true
			}
		}
		nsOf := map[int]uint32{}
		seqOf := map[int]bool{}
		received := 0
		for i := 0; i+1 < len(script); i += 2 {
			op, arg := script[i], script[i+1]
			switch {
			case op&0x80 != 0: // a packet; ns moves by a signed delta
				ns = (ns + uint32(int8(arg))) & SeqMask
				if op&0x40 != 0 {
					ns = uint32(arg) << 16
				}
				hasSeq := op&0x20 == 0
				it := received
				received++
				nsOf[it], seqOf[it] = ns, hasSeq
				v, _ := s.Receive(Data{HasSeq: hasSeq, NS: ns}, it, now)
				switch v {
				case Deliver:
					deliver(it, ns, hasSeq)
				case DropSeq, DropWindow:
					seen[it] = true
				case Queued:
					if !reorder || !hasSeq {
						t.Fatalf("queued without reordering")
					}
				}
			default: // time passes
				now += int64(arg) * int64(100*time.Microsecond)
			}
			for {
				it, v, ok := s.Next(now)
				if !ok {
					break
				}
				if v == Deliver {
					deliver(it, nsOf[it], seqOf[it])
				} else if seen[it] {
					t.Fatalf("item %d dropped after it was handled", it)
				} else {
					seen[it] = true
				}
			}
			if reorder && s.Snapshot().Queued >= c.ReorderCap {
				t.Fatalf("%d held with capacity %d", s.Snapshot().Queued, c.ReorderCap)
			}
		}
		for {
			it, ok := s.Purge()
			if !ok {
				break
			}
			if seen[it] {
				t.Fatalf("purged item %d was already handled", it)
			}
			seen[it] = true
		}
		if len(seen) != received {
			t.Fatalf("%d packets in, %d accounted for", received, len(seen))
		}
	})
}

// FuzzParseCookie: the cookie parser accepts exactly 8 or 16 hex digits and
// round-trips them.
func FuzzParseCookie(f *testing.F) {
	for _, s := range []string{"01020304", "0102030405060708", "ABCDEF01", "", "xyz", "0102030405060708090a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCookie(s)
		if err != nil {
			return
		}
		if len(s) != 8 && len(s) != 16 {
			t.Fatalf("accepted %q", s)
		}
		if !bytes.EqualFold([]byte(c.String()), []byte(s)) {
			t.Fatalf("%q -> %s", s, c)
		}
	})
}
