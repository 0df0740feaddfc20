package tap

import (
	"testing"
)

// Benchmarks of the offload hot paths, per frame (1448-byte TCP segments,
// as through a 1500-byte path): ns/op is per frame, MB/s counts frame
// bytes. For benchstat: go test -run '^$' -bench . -count 10 ./tap

const benchMSS = 1448

func BenchmarkChecksum(b *testing.B) {
	buf := make([]byte, benchMSS)
	for i := range buf {
		buf[i] = byte(i)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	var s uint64
	for b.Loop() {
		s += checksum(0, buf)
	}
	_ = s
}

// BenchmarkSegment cuts a 44-segment TSO super-frame into frames (copy,
// IP and TCP checksums), as Read does for the transmit direction.
func BenchmarkSegment(b *testing.B) {
	const segs = 44
	frames := tcpFrames(b, false, false, segs+1, benchMSS, 0)
	frames = frames[:segs]
	_, parsed := runOf(b, frames, 0)
	bp, n, s := superOf(b, frames, 0, parsed)
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	b.SetBytes(int64(n-vnetHdrLen) / segs)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += segs {
		ts := superFrame{buf: bp, n: n, seg: s, mss: benchMSS, next: s.hdr + vnetHdrLen}
		if k := ts.emit(bufs, sizes, 64); k != segs {
			b.Fatalf("%d segments", k)
		}
	}
}

// BenchmarkCoalesce parses, checks (TCP checksum) and merges 44 received
// segments into one GSO frame's headers, as Write does for the receive
// direction (the payloads are gathered by the write itself).
func BenchmarkCoalesce(b *testing.B) {
	const segs = 44
	frames := tcpFrames(b, false, false, segs+1, benchMSS, 64)[:segs]
	bp := superPool.Get().(*[]byte)
	var arr [gsoMaxSegs]seg
	b.SetBytes(int64(len(frames[0]) - 64))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += segs {
		s, ok := parse(frames[0][64:])
		if !ok || !s.mergeable(frames[0][64:]) {
			b.Fatal("segment refused")
		}
		j, parsed := run(frames, 64, 0, s, arr[:0])
		if j != segs {
			b.Fatalf("run of %d", j)
		}
		merge(*bp, frames[0][64:], parsed)
	}
}
