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
		s := &sock{bc: f, groOn: true, drained: true}
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
			if n == 0 && s.drained {
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
