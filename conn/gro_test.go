package conn

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fakeGRO returns prepared datagrams, coalesced as the kernel does.
type fakeGRO struct {
	dgrams [][]byte
	segs   []int
}

func (f *fakeGRO) ReadBatch(ms []Message, _ int) (int, error) {
	if len(f.dgrams) == 0 {
		return 0, unix.EAGAIN
	}
	n := 0
	for n < len(ms) && len(f.dgrams) > 0 {
		m := &ms[n]
		m.N = copy(m.Buffers[0], f.dgrams[0])
		m.NN, m.Flags = 0, 0
		if f.segs[0] > 0 {
			oob := m.OOB[:unix.CmsgSpace(4)]
			h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
			h.SetLen(unix.CmsgLen(4))
			binary.NativeEndian.PutUint32(oob[unix.CmsgLen(0):], uint32(f.segs[0]))
			m.NN = unix.CmsgSpace(4)
		}
		f.dgrams, f.segs = f.dgrams[1:], f.segs[1:]
		n++
	}
	return n, nil
}

func (f *fakeGRO) WriteBatch([]Message, int) (int, error) { return 0, nil }

func TestGROSplit(t *testing.T) {
	// Datagram 1: 5 messages of 100 bytes, the last 40 (one GRO buffer);
	// datagram 2: a lone message of 70 bytes (no control message).
	var d1 []byte
	var want [][]byte
	for i := 0; i < 5; i++ {
		n := 100
		if i == 4 {
			n = 40
		}
		m := bytes.Repeat([]byte{byte(i + 1)}, n)
		d1 = append(d1, m...)
		want = append(want, m)
	}
	d2 := bytes.Repeat([]byte{9}, 70)
	want = append(want, d2)
	// offset 8 is served in place (the caller's buffer replaced by a slice
	// of the read's own), offset 100 by copying.
	for _, offset := range []int{8, GROHeadroom, GROHeadroom + 36} {
		f := &fakeGRO{dgrams: [][]byte{d1, d2}, segs: []int{100, 0}}
		s := &sock{bc: f, groOn: true}
		s.drained.Store(true)
		var got [][]byte
		own := [][]byte{make([]byte, 200), make([]byte, 200)} // smaller than a read: carry-over
		bufs := make([][]byte, 2)
		sizes := make([]int, 2)
		for calls := 0; calls < 10; calls++ {
			copy(bufs, own)
			n, err := s.ReadBatch(bufs, sizes, offset)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < n; i++ {
				if lent := &bufs[i][0] != &own[i][0]; lent != (offset <= GROHeadroom) {
					t.Fatalf("offset %d: buffer lent %v", offset, lent)
				}
				if cap(bufs[i]) < offset+sizes[i] {
					t.Fatalf("offset %d: message cut", offset)
				}
				got = append(got, append([]byte(nil), bufs[i][offset:offset+sizes[i]]...))
			}
			if n == 0 && s.drained.Load() {
				break
			}
		}
		if len(got) != len(want) {
			t.Fatalf("offset %d: %d messages, want %d", offset, len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("offset %d: message %d: %d bytes of %x", offset, i, len(got[i]), got[i][:1])
			}
		}
		if s.gro != nil || s.groDone != nil {
			t.Fatalf("offset %d: buffers still held after the last message and a read", offset)
		}
	}
	if groSegment(nil) != 0 || groSegment(make([]byte, 3)) != 0 {
		t.Fatal("groSegment on nothing")
	}
}

// FuzzGROSplit: whatever the kernel hands over (datagram lengths up to a
// full buffer, any segment size), ReadBatch splits it into the messages
// the sender sent, in order, each whole or (when it does not fit a copied
// read's buffer) dropped with size 0, none lost, at every offset.
func FuzzGROSplit(f *testing.F) {
	f.Add(uint16(500), uint16(100), uint16(70), uint16(0), uint8(8), uint16(1500))
	f.Add(uint16(65535), uint16(1448), uint16(1), uint16(1), uint8(200), uint16(100))
	f.Add(uint16(0), uint16(0), uint16(0), uint16(0), uint8(0), uint16(0))
	f.Fuzz(func(t *testing.T, l1, seg1, l2, seg2 uint16, off uint8, room uint16) {
		offset := int(off)
		var want [][]byte
		var dgrams [][]byte
		for k, d := range []struct{ l, seg int }{{int(l1), int(seg1)}, {int(l2), int(seg2)}} {
			b := make([]byte, min(d.l, groBufSize))
			for i := range b {
				b[i] = byte(i*7 + k)
			}
			dgrams = append(dgrams, b)
			seg := d.seg
			if seg <= 0 {
				seg = len(b)
			}
			for o := 0; o < len(b); o += seg {
				want = append(want, b[o:min(o+seg, len(b))])
			}
			if len(b) == 0 {
				want = append(want, b)
			}
		}
		fk := &fakeGRO{dgrams: dgrams, segs: []int{int(seg1), int(seg2)}}
		s := &sock{bc: fk, groOn: true}
		s.drained.Store(true)
		own := [][]byte{make([]byte, offset+int(room)), make([]byte, offset+int(room))}
		bufs := make([][]byte, 2)
		sizes := make([]int, 2)
		var got [][]byte
		for calls := 0; calls < 200000; calls++ {
			copy(bufs, own)
			n, err := s.ReadBatch(bufs, sizes, offset)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < n; i++ {
				if sizes[i] < 0 || offset+sizes[i] > cap(bufs[i]) {
					t.Fatalf("message %d of %d bytes at offset %d in a buffer of %d", i, sizes[i], offset, cap(bufs[i]))
				}
				got = append(got, append([]byte(nil), bufs[i][offset:offset+sizes[i]]...)) // lent until the next read
			}
			if n == 0 && s.drained.Load() {
				break
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%d messages, want %d", len(got), len(want))
		}
		for i := range want {
			dropped := len(got[i]) == 0 && offset > GROHeadroom && len(want[i]) > int(room)
			if !bytes.Equal(got[i], want[i]) && !dropped {
				t.Fatalf("message %d: %d bytes, want %d", i, len(got[i]), len(want[i]))
			}
		}
		if s.gro != nil {
			t.Fatal("a read still held after the last message")
		}
	})
}
