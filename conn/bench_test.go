package conn

import (
	"net/netip"
	"testing"
)

// Batch I/O benchmarks over loopback (no privileges needed): ns/op is per
// message, MB/s counts message bytes. go test -run '^$' -bench . ./conn

const benchMsg = 1400

func loopPair(b *testing.B, port uint16, oa, ob UDPOptions) (Conn, Conn) {
	lo := netip.MustParseAddr("127.0.0.1")
	a, err := DialUDP(netip.AddrPortFrom(lo, port), netip.AddrPortFrom(lo, port+1), oa)
	if err != nil {
		b.Skip("loopback UDP:", err)
	}
	c, err := DialUDP(netip.AddrPortFrom(lo, port+1), netip.AddrPortFrom(lo, port), ob)
	if err != nil {
		a.Close()
		b.Skip("loopback UDP:", err)
	}
	b.Cleanup(func() { a.Close(); c.Close() })
	return a, c
}

// drain reads r until it is closed.
func drain(r Reader, count func(int)) {
	bufs, sizes := make([][]byte, MaxBatch), make([]int, MaxBatch)
	own := make([][]byte, MaxBatch)
	for i := range own {
		own[i] = make([]byte, 64+65536)
	}
	for {
		if r.WaitRead() != nil {
			return
		}
		copy(bufs, own)
		n, err := r.ReadBatch(bufs, sizes, 64)
		if err != nil {
			return
		}
		count(n)
	}
}

func BenchmarkWriteBatch(b *testing.B) {
	for _, tc := range []struct {
		name string
		o    UDPOptions
		port uint16
	}{{"sendmmsg", UDPOptions{}, 41700}, {"gso", UDPOptions{GSO: true}, 41710}} {
		b.Run(tc.name, func(b *testing.B) {
			a, c := loopPair(b, tc.port, tc.o, UDPOptions{GRO: true})
			go drain(c, func(int) {})
			out := msgs(MaxBatch, benchMsg, 64)
			b.SetBytes(benchMsg)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += MaxBatch {
				a.WriteBatch(out, 64)
			}
		})
	}
}

func BenchmarkReadBatch(b *testing.B) {
	for _, tc := range []struct {
		name string
		o    UDPOptions
		port uint16
	}{{"recvmmsg", UDPOptions{}, 41720}, {"gro", UDPOptions{GRO: true}, 41730}} {
		b.Run(tc.name, func(b *testing.B) {
			a, c := loopPair(b, tc.port, UDPOptions{GSO: true}, tc.o)
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				out := msgs(MaxBatch, benchMsg, 64)
				for {
					select {
					case <-stop:
						return
					default:
						a.WriteBatch(out, 64)
					}
				}
			}()
			bufs, sizes := make([][]byte, MaxBatch), make([]int, MaxBatch)
			own := make([][]byte, MaxBatch)
			for i := range own {
				own[i] = make([]byte, 64+65536)
			}
			b.SetBytes(benchMsg)
			b.ReportAllocs()
			b.ResetTimer()
			for got := 0; got < b.N; {
				if err := c.WaitRead(); err != nil {
					b.Fatal(err)
				}
				copy(bufs, own)
				n, err := c.ReadBatch(bufs, sizes, 64)
				if err != nil {
					b.Fatal(err)
				}
				got += n
			}
		})
	}
}
