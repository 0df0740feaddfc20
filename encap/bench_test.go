package encap

import (
	"testing"
	"time"
)

func benchSession() Session {
	c := MustParseCookie("0102030405060708")
	p := MustParseCookie("a1a2a3a4b1b2b3b4")
	return Session{Encap: EncapUDP, SessionID: 1001, PeerSessionID: 2002, Cookie: c, PeerCookie: p, L2Spec: L2SpecDefault}
}

// BenchmarkEncode: per frame, the header (UDP, 8-byte cookie, sequenced
// sublayer) is written into the buffer's headroom.
func BenchmarkEncode(b *testing.B) {
	s := benchSession()
	tx := NewTxHeader(&s)
	seq := NewSeq[int](SeqConfig{SendSeq: true})
	buf := make([]byte, MaxHeaderLen+1514)
	b.SetBytes(1514)
	b.ReportAllocs()
	for b.Loop() {
		off := MaxHeaderLen - tx.Len()
		tx.Put(buf[off:], seq.NextSublayer())
	}
}

// BenchmarkDecode: peek, decode and the sequence check of one packet.
func BenchmarkDecode(b *testing.B) {
	s := benchSession()
	peer := Session{Encap: s.Encap, SessionID: s.PeerSessionID, PeerSessionID: s.SessionID,
		Cookie: s.PeerCookie, PeerCookie: s.Cookie, L2Spec: s.L2Spec}
	tx := NewTxHeader(&peer)
	pkts := make([][]byte, 256)
	for i := range pkts {
		pkts[i] = tx.Append(nil, SublayerWord(true, uint32(i)), make([]byte, 1514))
	}
	rx := NewRxHeader(&s)
	seq := NewSeq[int](SeqConfig{RecvSeq: true})
	b.SetBytes(1514)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p := pkts[i&255]
		i++
		_, ver, r := PeekUDP(p)
		if r != OK {
			b.Fatal(r)
		}
		d, r := rx.Decode(p, ver)
		if r != OK {
			b.Fatal(r)
		}
		seq.Receive(d, 0, 0)
	}
}

// BenchmarkReorder: every pair of packets arrives swapped.
func BenchmarkReorder(b *testing.B) {
	seq := NewSeq[int](SeqConfig{ReorderTimeout: 10 * time.Millisecond})
	b.ReportAllocs()
	var ns uint32
	for b.Loop() {
		for _, n := range [2]uint32{ns + 1, ns} {
			seq.Receive(Data{HasSeq: true, NS: n & SeqMask}, 0, 0)
			for {
				if _, _, ok := seq.Next(0); !ok {
					break
				}
			}
		}
		ns += 2
	}
}
